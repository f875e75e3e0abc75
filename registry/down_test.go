package registry_test

import (
	"errors"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/regclient"
)

// refusing is a transport whose every connection is refused, counting tries.
type refusing struct{ tries atomic.Int32 }

func (r *refusing) RoundTrip(*http.Request) (*http.Response, error) {
	r.tries.Add(1)
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

// TestKnownDownRegistryGetsOneTry: once every try of a request failed to
// connect, the registry is known down for a while, and each further
// request makes one try instead of the retry policy's (stale-if-error for
// many images then costs a refused connection each, not a backoff each).
// Known down ends after its time, or at the first answer.
func TestKnownDownRegistryGetsOneTry(t *testing.T) {
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	rt := &refusing{}
	r := newResolver(t, openStore(t), withClient(t,
		regclient.WithTransport(rt), regclient.WithRetry(4, time.Millisecond, time.Millisecond), regclient.WithClock(clock.Now)))
	resolve := func() int32 {
		t.Helper()
		before := rt.tries.Load()
		_, err := r.Resolve(t.Context(), "registry.example.com/app:v1")
		if !errors.Is(err, cache.ErrOffline) {
			t.Fatalf("Resolve = %v, want ErrOffline", err)
		}
		return rt.tries.Load() - before
	}
	if n := resolve(); n != 4 {
		t.Fatalf("first resolve made %d tries, want the policy's 4", n)
	}
	if n := resolve(); n != 1 {
		t.Fatalf("resolve while known down made %d tries, want 1", n)
	}
	clock.Advance(11 * time.Second)
	if n := resolve(); n != 4 {
		t.Fatalf("resolve after the down time made %d tries, want 4 again", n)
	}
}
