package mirror_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/mirror"
)

// records is a slog.Handler passing each record's message on, so a test
// can wait for the server to reach a step.
type records chan string

func (r records) Enabled(context.Context, slog.Level) bool { return true }
func (r records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r records) WithGroup(string) slog.Handler            { return r }
func (r records) Handle(_ context.Context, rec slog.Record) error {
	select {
	case r <- rec.Message:
	default: // a test that waits for nothing more
	}
	return nil
}

func (r records) await(t *testing.T, msg string) {
	t.Helper()
	deadline := time.After(bound)
	for {
		select {
		case got := <-r:
			if got == msg {
				return
			}
		case <-deadline:
			t.Fatalf("the server did not log %q within %v", msg, bound)
		}
	}
}

// closerFunc is an io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// serving is a mirror.Server running on 127.0.0.1 in front of a stream
// fixture's mirror, whose upstream holds back its blob's second half.
type serving struct {
	f       *streamFixture
	srv     *mirror.Server
	addr    string
	log     records
	stop    context.CancelFunc
	served  chan error   // Serve's result
	closed  chan bool    // at the mirror's Close: whether every handler had returned
	running atomic.Int64 // handlers running
}

func startServer(t *testing.T, opts ...mirror.ServerOption) *serving {
	t.Helper()
	s := &serving{f: newStreamFixture(t, newBlobUpstream(t, 1<<20, true, false)), log: make(records, 64),
		served: make(chan error, 1), closed: make(chan bool, 1)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.running.Add(1)
		defer s.running.Add(-1)
		s.f.mirror.ServeHTTP(w, r)
	})
	closeMirror := closerFunc(func() error {
		s.closed <- s.running.Load() == 0
		return s.f.mirror.Close()
	})
	var err error
	s.srv, err = mirror.NewServer(h, append([]mirror.ServerOption{
		mirror.WithServerLogger(slog.New(s.log)), mirror.WithCloseAfter(closeMirror)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go func() { s.served <- s.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		_ = s.srv.Close()
		<-s.served
	})
	return s
}

// getBlob GETs the fixture's blob through the server and returns the
// response once its first byte has arrived: the request is in progress,
// its download held back by the upstream.
func (s *serving) getBlob(t *testing.T, scheme string, client *http.Client) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Get(scheme + "://" + s.addr + "/v2/team/app/blobs/" + s.f.up.digest.String())
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET blob: %s", resp.Status)
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	return resp, first
}

// shutDown ends Serve's context and waits for the server to say so.
func (s *serving) shutDown(t *testing.T) {
	t.Helper()
	s.stop()
	s.log.await(t, "shutting down")
}

func (s *serving) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.served:
		s.served <- err // for the cleanup
		return err
	case <-time.After(bound):
		t.Fatalf("Serve did not return within %v", bound)
		return nil
	}
}

// checkMirrorClosed asserts the mirror was closed after its handler
// returned: a blob it does not hold is now refused (503), not fetched.
func (s *serving) checkMirrorClosed(t *testing.T) {
	t.Helper()
	select {
	case afterHandlers := <-s.closed:
		if !afterHandlers {
			t.Error("the mirror was closed while a handler was still running")
		}
	default:
		t.Fatal("Serve returned without closing the mirror")
	}
	other := v1.Hash{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	rec := httptest.NewRecorder()
	s.f.mirror.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/team/app/blobs/"+other.String(), nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("a blob request after Serve returned: %d, want 503 from a closed mirror", rec.Code)
	}
}

// A request in progress when the context ends finishes within the grace
// period, whole and verified, and its blob is stored.
func TestServerFinishesInFlightWithinGrace(t *testing.T) {
	s := startServer(t)
	resp, first := s.getBlob(t, "http", http.DefaultClient)
	defer resp.Body.Close()
	s.shutDown(t)
	close(s.f.up.gate)
	n, d, err := readHashed(io.MultiReader(bytes.NewReader(first), resp.Body))
	if err != nil || n != s.f.up.size || d != s.f.up.digest {
		t.Fatalf("the request in progress at shutdown got %d bytes (%v), digest %s; want %d, %s", n, err, d, s.f.up.size, s.f.up.digest)
	}
	if err := s.result(t); err != nil {
		t.Fatalf("Serve = %v, want nil after its context ended", err)
	}
	if _, err := s.f.store.Stat(context.Background(), s.f.up.digest); err != nil {
		t.Errorf("the blob finished in the grace period is not stored: %v", err)
	}
	s.checkMirrorClosed(t)
}

// A request still in progress when the grace period ends is cancelled:
// its client does not get the whole blob, nothing of it is stored and
// the download's temp file is gone.
func TestServerAbandonsAfterGrace(t *testing.T) {
	s := startServer(t, mirror.WithShutdownGrace(50*time.Millisecond))
	resp, _ := s.getBlob(t, "http", http.DefaultClient)
	defer resp.Body.Close()
	s.stop()
	if err := s.result(t); err != nil {
		t.Fatalf("Serve = %v, want nil after its context ended", err)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Errorf("the abandoned request read to its end (%d more bytes)", n)
	}
	if _, err := s.f.store.Stat(context.Background(), s.f.up.digest); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("the abandoned blob: Stat = %v, want ErrNotFound", err)
	}
	if left := tempFiles(t, s.f.tempDir); len(left) != 0 {
		t.Errorf("temp files left after the abandoned download: %v", left)
	}
	s.checkMirrorClosed(t)
}

// Close cuts a long grace period short (what a second SIGTERM asks).
func TestServerCloseCutsGraceShort(t *testing.T) {
	s := startServer(t, mirror.WithShutdownGrace(time.Hour))
	resp, _ := s.getBlob(t, "http", http.DefaultClient)
	defer resp.Body.Close()
	s.shutDown(t)
	if err := s.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.result(t); err != nil {
		t.Fatalf("Serve = %v, want nil after Close", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("the request cut by Close read to its end")
	}
	s.checkMirrorClosed(t)
}

// TLS on the main listener (1.2 at least) and plain /metrics on a second
// one, both shut down by the context.
func TestServerTLSAndMetricsListener(t *testing.T) {
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.StartTLS() // for a certificate of 127.0.0.1 and a client trusting it
	cfg, client := ts.TLS, ts.Client()
	ts.Close()
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := http.NewServeMux()
	metrics.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "up 1\n") })
	s := startServer(t, mirror.WithTLS(cfg), mirror.WithMetricsListener(ml, metrics))

	resp, err := client.Get("https://" + s.addr + "/v2/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ over TLS: %v, %v", resp, err)
	}
	resp.Body.Close()
	old := client.Transport.(*http.Transport).Clone()
	old.TLSClientConfig.MaxVersion = tls.VersionTLS11
	if resp, err := (&http.Client{Transport: old}).Get("https://" + s.addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Error("a TLS 1.1 client was served")
	}
	resp, err = http.Get("http://" + ml.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "up 1\n" {
		t.Errorf("GET /metrics: %s %q", resp.Status, body)
	}

	s.stop()
	if err := s.result(t); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{s.addr, ml.Addr().String()} {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Serve returned", addr)
		}
	}
}

func TestNewServerRefuses(t *testing.T) {
	for name, opt := range map[string]mirror.ServerOption{
		"TLS without a certificate": mirror.WithTLS(&tls.Config{}),
		"a negative grace":          mirror.WithShutdownGrace(-time.Second),
		"a nil closer":              mirror.WithCloseAfter(nil),
		"a nil metrics listener":    mirror.WithMetricsListener(nil, http.NotFoundHandler()),
	} {
		if _, err := mirror.NewServer(http.NotFoundHandler(), opt); err == nil {
			t.Errorf("NewServer with %s succeeded", name)
		}
	}
	if _, err := mirror.NewServer(nil); err == nil {
		t.Error("NewServer(nil) succeeded")
	}
}
