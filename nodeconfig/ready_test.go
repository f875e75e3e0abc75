package nodeconfig_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildcache/buildcache/nodeconfig"
)

func TestWaitReady(t *testing.T) {
	var asked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if asked.Add(1) < 3 {
			http.Error(w, "not ready: store not writable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := nodeconfig.WaitReady(ctx, srv.URL, nil); err != nil {
		t.Fatal(err)
	}
	if n := asked.Load(); n != 3 {
		t.Errorf("asked /readyz %d times, want until the third said 200", n)
	}
}

func TestWaitReadyTimesOut(t *testing.T) {
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready: shutting down", http.StatusServiceUnavailable)
	}))
	defer notReady.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String()
	l.Close()
	for _, tc := range []struct{ url, want string }{
		{notReady.URL, `503 Service Unavailable "not ready: shutting down"`},
		{refused, "connection refused"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 600*time.Millisecond)
		err := nodeconfig.WaitReady(ctx, tc.url, nil)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "not ready after") {
			t.Errorf("WaitReady(%s) = %v, want the last answer: %s", tc.url, err, tc.want)
		}
	}
	if err := nodeconfig.WaitReady(t.Context(), "127.0.0.1:5000", nil); err == nil {
		t.Error("a mirror without a scheme was accepted")
	}
}
