package mirror_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/mirror"
)

// probedStore is a memory store with a write probe the test controls:
// fail makes it fail, hold (when set) blocks it until closed.
type probedStore struct {
	cache.LayerCache
	probes atomic.Int64
	mu     sync.Mutex
	fail   error
	hold   chan struct{}
}

func newProbedStore(t *testing.T) *probedStore { return &probedStore{LayerCache: memStore(t)} }

func memStore(t *testing.T) cache.LayerCache {
	t.Helper()
	c, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *probedStore) ProbeWrite(ctx context.Context) error {
	s.probes.Add(1)
	s.mu.Lock()
	fail, hold := s.fail, s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return fail
}

func (s *probedStore) set(fail error, hold chan struct{}) {
	s.mu.Lock()
	s.fail, s.hold = fail, hold
	s.mu.Unlock()
}

func newHealth(t *testing.T, store cache.LayerCache, opts ...mirror.HealthOption) *mirror.Health {
	t.Helper()
	h, err := mirror.NewHealth(store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// probe answers one request to h and returns its status and body.
func probe(h http.Handler, method, path string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestHealthAnswers(t *testing.T) {
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h := newHealth(t, store)
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{http.MethodGet, mirror.HealthzPath, 200, "ok\n"},
		{http.MethodGet, mirror.ReadyzPath, 200, "ok\n"},
		{http.MethodHead, mirror.HealthzPath, 200, ""},
		{http.MethodHead, mirror.ReadyzPath, 200, ""},
		{http.MethodPost, mirror.ReadyzPath, 405, "method not allowed\n"},
		{http.MethodGet, "/v2/", 404, "404 page not found\n"},
	} {
		if status, body := probe(h, tc.method, tc.path); status != tc.status || body != tc.body {
			t.Errorf("%s %s = %d %q, want %d %q", tc.method, tc.path, status, body, tc.status, tc.body)
		}
	}
	// Route answers the two paths itself and passes the rest on.
	var passed []string
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		passed = append(passed, r.URL.Path)
		w.WriteHeader(http.StatusUnauthorized)
	})
	routed := h.Route(next)
	for _, p := range []string{mirror.HealthzPath, mirror.ReadyzPath} {
		if status, _ := probe(routed, http.MethodGet, p); status != 200 {
			t.Errorf("GET %s through Route = %d, want 200 without reaching the handler", p, status)
		}
	}
	if status, _ := probe(routed, http.MethodGet, "/v2/"); status != http.StatusUnauthorized {
		t.Errorf("GET /v2/ through Route = %d, want the handler's 401", status)
	}
	if len(passed) != 1 || passed[0] != "/v2/" {
		t.Errorf("Route passed %v on, want only /v2/", passed)
	}

	// A closed store is not ready.
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	h = newHealth(t, store)
	if status, body := probe(h, http.MethodGet, mirror.ReadyzPath); status != 503 || body != "not ready: store not writable\n" {
		t.Errorf("/readyz of a closed store = %d %q, want 503 store not writable", status, body)
	}
	if err := h.Ready(t.Context()); !errors.Is(err, mirror.ErrStoreNotWritable) || !errors.Is(err, localfs.ErrClosed) {
		t.Errorf("Ready of a closed store = %v, want ErrStoreNotWritable wrapping localfs.ErrClosed", err)
	}
	if status, _ := probe(h, http.MethodGet, mirror.HealthzPath); status != 200 {
		t.Errorf("/healthz of a closed store = %d, want 200: the process serves", status)
	}
}

// Concurrent /readyz within the probe interval cost one probe.
func TestHealthProbesOncePerInterval(t *testing.T) {
	store := newProbedStore(t)
	h := newHealth(t, store, mirror.WithProbeInterval(time.Hour))
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			if status, body := probe(h, http.MethodGet, mirror.ReadyzPath); status != 200 {
				t.Errorf("/readyz = %d %q", status, body)
			}
		})
	}
	wg.Wait()
	if n := store.probes.Load(); n != 1 {
		t.Errorf("64 /readyz within the interval ran %d probes, want 1", n)
	}
	// A failure is not seen until the interval is over: the outcome is
	// cached, not re-probed.
	store.set(errors.New("disk gone"), nil)
	if err := h.Ready(t.Context()); err != nil {
		t.Errorf("Ready within the interval = %v, want the cached nil", err)
	}
	if n := store.probes.Load(); n != 1 {
		t.Errorf("%d probes, want still 1", n)
	}
}

// A probe that does not return in time makes the mirror not ready at
// the timeout; no second probe starts while it hangs; once it returns,
// its outcome counts.
func TestHealthProbeTimeout(t *testing.T) {
	store := newProbedStore(t)
	hold := make(chan struct{})
	store.set(nil, hold)
	h := newHealth(t, store, mirror.WithProbeInterval(0), mirror.WithProbeTimeout(20*time.Millisecond))
	for i := range 3 {
		if err := h.Ready(t.Context()); !errors.Is(err, mirror.ErrProbeTimeout) {
			t.Fatalf("Ready %d with the probe hanging = %v, want ErrProbeTimeout", i, err)
		}
	}
	if status, body := probe(h, http.MethodGet, mirror.ReadyzPath); status != 503 || body != "not ready: store probe did not answer in time\n" {
		t.Errorf("/readyz with the probe hanging = %d %q", status, body)
	}
	if n := store.probes.Load(); n != 1 {
		t.Errorf("%d probes started while the first hung, want 1", n)
	}
	store.set(nil, nil)
	close(hold)
	deadline := time.Now().Add(bound)
	for h.Ready(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready %v after the hung probe returned", bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Readiness follows the store both ways, and only its changes are
// logged; shutdown makes it not ready for good while /healthz stays 200.
func TestHealthFollowsStoreAndShutdown(t *testing.T) {
	store := newProbedStore(t)
	var logged testserver.LockedBuffer
	h := newHealth(t, store, mirror.WithProbeInterval(0), mirror.WithHealthLogger(slog.New(slog.NewTextHandler(&logged, nil))))
	ready := func(want int) {
		t.Helper()
		for range 5 {
			if status, body := probe(h, http.MethodGet, mirror.ReadyzPath); status != want {
				t.Fatalf("/readyz = %d %q, want %d", status, body, want)
			}
		}
	}
	ready(200)
	store.set(errors.New("read-only file system"), nil)
	ready(503)
	if err := h.Ready(t.Context()); !errors.Is(err, mirror.ErrStoreNotWritable) || !strings.Contains(err.Error(), "read-only file system") {
		t.Errorf("Ready = %v, want ErrStoreNotWritable with the store's error", err)
	}
	store.set(nil, nil)
	ready(200)
	h.Shutdown()
	ready(503)
	if err := h.Ready(t.Context()); !errors.Is(err, mirror.ErrShuttingDown) {
		t.Errorf("Ready after Shutdown = %v, want ErrShuttingDown", err)
	}
	if status, body := probe(h, http.MethodGet, mirror.ReadyzPath); body != "not ready: shutting down\n" {
		t.Errorf("/readyz after Shutdown = %d %q", status, body)
	}
	if status, _ := probe(h, http.MethodGet, mirror.HealthzPath); status != 200 {
		t.Errorf("/healthz after Shutdown = %d, want 200", status)
	}
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	want := []string{"msg=ready", `msg="not ready" reason="store not writable" error="mirror: store not writable: read-only file system"`,
		"msg=ready", `msg="not ready" reason="shutting down"`}
	if len(lines) != len(want) {
		t.Fatalf("logged %d lines for 4 changes of readiness over 20 probes:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("log line %d = %s, want %s", i, lines[i], w)
		}
	}
}

// A Server given WithHealth answers the probes ahead of its handler and
// is not ready as soon as its context ends, while a request is still in
// its grace period.
func TestServerHealthDuringGrace(t *testing.T) {
	h := newHealth(t, newProbedStore(t))
	s := startServer(t, mirror.WithHealth(h))
	for _, p := range []string{mirror.HealthzPath, mirror.ReadyzPath} {
		resp, err := http.Get("http://" + s.addr + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %s", p, resp.Status)
		}
	}
	if n := s.running.Load(); n != 0 {
		t.Fatalf("the probes reached the mirror's handler (%d running)", n)
	}
	resp, _ := s.getBlob(t, "http", http.DefaultClient)
	defer resp.Body.Close()
	s.shutDown(t)
	if err := h.Ready(t.Context()); !errors.Is(err, mirror.ErrShuttingDown) {
		t.Errorf("Ready during the grace period = %v, want ErrShuttingDown", err)
	}
	if n := s.running.Load(); n != 1 {
		t.Errorf("%d requests running: the check was not made during the grace period", n)
	}
	close(s.f.up.gate)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	if err := s.result(t); err != nil {
		t.Fatal(err)
	}
}

// WithShutdownDelay keeps serving, not ready, until the delay is over or
// Close cuts it short.
func TestServerShutdownDelay(t *testing.T) {
	h := newHealth(t, newProbedStore(t))
	s := startServer(t, mirror.WithHealth(h), mirror.WithShutdownDelay(time.Hour))
	s.stop()
	s.log.await(t, "not ready: still serving for the shutdown delay")
	get := func(path string) int {
		t.Helper()
		resp, err := http.Get("http://" + s.addr + path)
		if err != nil {
			t.Fatalf("GET %s during the shutdown delay: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(mirror.ReadyzPath); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the shutdown delay = %d, want 503", got)
	}
	if got := get(mirror.HealthzPath); got != 200 {
		t.Errorf("/healthz during the shutdown delay = %d, want 200", got)
	}
	if got := get("/v2/"); got != 200 {
		t.Errorf("/v2/ during the shutdown delay = %d, want 200: still serving", got)
	}
	select {
	case err := <-s.served:
		t.Fatalf("Serve returned during the shutdown delay: %v", err)
	default:
	}
	_ = s.srv.Close()
	if err := s.result(t); err != nil {
		t.Fatal(err)
	}
}

func TestHealthOptions(t *testing.T) {
	if _, err := mirror.NewHealth(nil); err == nil {
		t.Error("NewHealth(nil) succeeded")
	}
	for _, opt := range []mirror.HealthOption{mirror.WithProbeInterval(-1), mirror.WithProbeTimeout(0), mirror.WithHealthLogger(nil)} {
		if _, err := mirror.NewHealth(newProbedStore(t), opt); err == nil {
			t.Error("a bad option was accepted")
		}
	}
	for _, opt := range []mirror.ServerOption{mirror.WithHealth(nil), mirror.WithShutdownDelay(-1)} {
		if _, err := mirror.NewServer(http.NotFoundHandler(), opt); err == nil {
			t.Error("a bad server option was accepted")
		}
	}
	// A store with no write probe is ready until shutdown.
	h := newHealth(t, memStore(t))
	if err := h.Ready(t.Context()); err != nil {
		t.Errorf("Ready of a store with no probe = %v", err)
	}
}
