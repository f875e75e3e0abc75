package regclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildcache/buildcache/internal/testclock"
)

// fallbackRig is a client over one test registry, with a manual clock for
// what it remembers and a recorded, instant sleep for its retry waits.
type fallbackRig struct {
	c     *Client
	repo  name.Repository
	clock *testclock.Clock
	calls atomic.Int32

	mu    sync.Mutex
	waits []time.Duration
}

func newFallbackRig(t *testing.T, handler http.HandlerFunc, opts ...Option) *fallbackRig {
	t.Helper()
	rig := &fallbackRig{clock: testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rig.calls.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	opts = append([]Option{WithClock(rig.clock.Now), withSleep(func(_ context.Context, d time.Duration) error {
		rig.mu.Lock()
		rig.waits = append(rig.waits, d)
		rig.mu.Unlock()
		return nil
	})}, opts...)
	c, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	rig.c = c
	rig.repo, _ = name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/app")
	return rig
}

// do sends a HEAD of the manifest "v1" with ctx and returns the error and
// how many requests the registry saw for it.
func (rig *fallbackRig) do(ctx context.Context) (error, int) {
	before := rig.calls.Load()
	resp, err := rig.c.Do(ctx, Request{Method: http.MethodHead, Repo: rig.repo, Kind: "manifests", Ref: "v1"})
	if err == nil {
		Drain(resp)
	}
	return err, int(rig.calls.Load() - before)
}

func (rig *fallbackRig) waited() []time.Duration {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	return append([]time.Duration(nil), rig.waits...)
}

// A 503 with Retry-After: 60 is one request, not waited for, under a
// fallback budget and without; it makes its registry known to be failing
// until the Retry-After has passed, so that a caller with a cached copy
// does not ask it (nor wait) again, and one without makes one try.
// Issue 19, item 3: it cost 30 s on every request.
func TestRetryAfterOn5xxMakesTheRegistryKnownDown(t *testing.T) {
	rig := newFallbackRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	fallback := WithFallback(t.Context(), 5*time.Second)
	err, n := rig.do(fallback)
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable || !errors.Is(err, ErrFallbackBudget) || n != 1 {
		t.Fatalf("first request: %v after %d requests; want one request, a 503 RemoteError with ErrFallbackBudget", err, n)
	}
	if w := rig.waited(); len(w) != 0 {
		t.Errorf("waited %v for a Retry-After of 60s under a 5s budget; want no wait", w)
	}
	until, down := rig.c.KnownDown(rig.repo.RegistryStr())
	if want := rig.clock.Now().Add(time.Minute); !down || !until.Equal(want) {
		t.Fatalf("KnownDown = %v, %v; want true until %v", until, down, want)
	}

	err, n = rig.do(fallback)
	var kd *KnownDownError
	if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable || !errors.As(err, &kd) || !kd.Until.Equal(until) || n != 0 {
		t.Errorf("while known down, with a fallback: %v after %d requests; want no request and a 503 KnownDownError until %v", err, n, until)
	}
	if err, n = rig.do(t.Context()); n != 1 || errors.As(err, &kd) {
		t.Errorf("while known down, no fallback: %v after %d requests; want one try", err, n)
	}
	if w := rig.waited(); len(w) != 0 {
		t.Errorf("waited %v; want no wait at all", w)
	}

	rig.clock.Advance(61 * time.Second)
	if _, n = rig.do(fallback); n != 1 {
		t.Errorf("after the Retry-After, with a fallback: %d requests, want 1", n)
	}
}

// Under a fallback budget, waits that fit in it are still waited; a
// backoff that would end past it is not.
func TestFallbackBudgetBoundsTheWaits(t *testing.T) {
	for _, tt := range []struct {
		name       string
		retryAfter string
		wantWaits  []time.Duration
		wantCalls  int
		wantBudget bool // ErrFallbackBudget in the chain
	}{
		{"Retry-After within the budget", "1", []time.Duration{time.Second, time.Second}, 3, false},
		{"backoff past the budget", "", nil, 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rig := newFallbackRig(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(http.StatusBadGateway)
			}, WithRetry(3, time.Hour, time.Hour))
			err, n := rig.do(WithFallback(t.Context(), 5*time.Second))
			if n != tt.wantCalls || errors.Is(err, ErrFallbackBudget) != tt.wantBudget {
				t.Errorf("%v after %d requests; want %d requests, ErrFallbackBudget %v", err, n, tt.wantCalls, tt.wantBudget)
			}
			if w := rig.waited(); len(w) != len(tt.wantWaits) {
				t.Errorf("waits %v, want %v", w, tt.wantWaits)
			}
			if _, down := rig.c.KnownDown(rig.repo.RegistryStr()); down != (tt.retryAfter != "") {
				t.Errorf("KnownDown %v; want it only after a Retry-After", down)
			}
		})
	}
}

// A registry that accepts connections and never answers costs a request
// under a fallback budget the budget, not the header bound times the
// tries; it is then known down, and the next such request is not sent.
func TestFallbackBudgetBoundsASilentRegistry(t *testing.T) {
	release := make(chan struct{})
	rig := newFallbackRig(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}, WithTimeouts(Timeouts{ResponseHeader: time.Minute}))
	defer close(release)
	done := make(chan struct{})
	var err error
	var n int
	go func() {
		defer close(done)
		err, n = rig.do(WithFallback(t.Context(), 300*time.Millisecond))
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // only a hang trips it
		t.Fatal("a request under a 300ms budget has not returned after 30s")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, ErrFallbackBudget) || n != 1 {
		t.Fatalf("%v after %d requests; want one request ending in a timeout, with ErrFallbackBudget", err, n)
	}
	var kd *KnownDownError
	if err, n = rig.do(WithFallback(t.Context(), 300*time.Millisecond)); n != 0 || !errors.As(err, &kd) || !errors.As(err, &ne) {
		t.Errorf("next request: %v after %d requests; want none sent, a KnownDownError over the timeout", err, n)
	}
}

// refusingTransport refuses every connection, counting the tries.
type refusingTransport struct{ tries atomic.Int32 }

func (rt *refusingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	rt.tries.Add(1)
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

// A registry known to refuse connections still gets one try under a
// fallback budget: it costs a round trip, and finds a registry that is
// back at once. One whose last try timed out gets none (above).
func TestFallbackTriesARefusingRegistryOnce(t *testing.T) {
	rt := &refusingTransport{}
	c, err := New(WithTransport(rt), withSleep(func(context.Context, time.Duration) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository("127.0.0.1:1/app")
	for i, want := range []int32{4, 1} {
		before := rt.tries.Load()
		_, err := c.Do(WithFallback(t.Context(), 5*time.Second), Request{Method: http.MethodHead, Repo: repo, Kind: "manifests", Ref: "v1"})
		var kd *KnownDownError
		if n := rt.tries.Load() - before; n != want || err == nil || errors.As(err, &kd) {
			t.Errorf("request %d: %d tries, %v; want %d tries and the refusal", i+1, n, err, want)
		}
	}
}
