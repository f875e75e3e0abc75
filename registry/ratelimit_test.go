package registry_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

// hubDouble makes a fakeRegistry behave as Docker Hub does with its pull
// limit: every answer states "ratelimit-limit: 100;w=21600" and the
// remaining count; a manifest GET spends one, a HEAD none; with none left,
// a manifest GET is refused with 429 and Retry-After.
type hubDouble struct {
	mu        sync.Mutex
	remaining int
}

func (h *hubDouble) set(n int) {
	h.mu.Lock()
	h.remaining = n
	h.mu.Unlock()
}

func (h *hubDouble) fault(w http.ResponseWriter, r *http.Request) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	manifestGET := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/")
	if manifestGET && h.remaining == 0 {
		w.Header().Set("Retry-After", "3600")
		w.Header().Set("ratelimit-limit", "100;w=21600")
		w.Header().Set("ratelimit-remaining", "0;w=21600")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	if manifestGET {
		h.remaining--
	}
	w.Header().Set("ratelimit-limit", "100;w=21600")
	w.Header().Set("ratelimit-remaining", fmt.Sprintf("%d;w=21600", h.remaining))
	return false
}

func TestRateLimitReserveSavesPulls(t *testing.T) {
	reg := newFakeRegistry(t)
	hub := &hubDouble{remaining: 100}
	reg.setFault(hub.fault)
	ref := reg.host + "/library/app:1"
	d1 := push(t, ref, twoPlatformIndex(t, 512))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	store := openStore(t)
	r := newResolver(t, store, registry.WithRateLimitReserve(2), registry.WithClock(clock), withClient(t, regclient.WithClock(clock)))
	if res, err := r.Resolve(t.Context(), ref, both); err != nil || res.Source != cache.Pulled {
		t.Fatalf("cold: %+v, %v", res, err)
	}
	if got := r.Stats().RateLimits[reg.host]; got.Limit != 100 || got.Remaining != 97 || got.Window != 6*time.Hour || !got.Stated {
		t.Fatalf("after 3 manifest GETs, RateLimits[%s] = %+v; want 97 of 100 per 6h", reg.host, got)
	}

	// Two pulls left, a reserve of two: the tag moves, and the cached copy
	// is served after one HEAD, which Docker Hub does not count.
	hub.set(2)
	d2 := push(t, ref, twoPlatformIndex(t, 512))
	reg.reset()
	res, err := r.Resolve(t.Context(), ref, both)
	if err != nil || res.Source != cache.Reserved || res.Digest != d1 {
		t.Fatalf("moved tag at the reserve: %+v, %v; want Reserved %s", res, err, d1)
	}
	t.Logf("moved tag at the reserve: %v", reg.counts)
	if reg.count("GET manifests") != 0 || reg.count("HEAD manifests") != 1 || reg.count("GET blobs") != 0 {
		t.Errorf("moved tag at the reserve made %v; want 1 HEAD and no GET", reg.counts)
	}
	if w := res.Why; w.StoredDigest != d1 || w.RemoteDigest != d2 || !strings.Contains(w.Reason, "reserve of 2") || w.Fetched != 0 {
		t.Errorf("Why = %+v; want stored %s, remote %s, a reason naming the reserve", w, d1, d2)
	}

	// An image that is not cached spends the budget kept for it.
	other := reg.host + "/library/other:1"
	push(t, other, twoPlatformIndex(t, 512))
	reg.reset()
	res, err = r.Resolve(t.Context(), other, cache.WithPlatforms("linux/amd64"))
	if err != nil || res.Source != cache.Pulled {
		t.Fatalf("uncached at the reserve: %+v, %v; want Pulled", res, err)
	}
	t.Logf("uncached at the reserve: %v", reg.counts)
	if reg.count("GET manifests") != 2 {
		t.Errorf("uncached at the reserve: %d manifest GETs, want 2 (index, amd64)", reg.count("GET manifests"))
	}
	if st := r.Stats(); st.Reserved != 1 || st.RateLimits[reg.host].Remaining != 0 {
		t.Errorf("Stats = %+v; want 1 Reserved and 0 remaining", st)
	}

	// The budget is spent: the next uncached image meets a 429 whose
	// Retry-After is beyond the longest retry wait, so it is not retried.
	third := reg.host + "/library/third:1"
	push(t, third, twoPlatformIndex(t, 512))
	reg.reset()
	_, err = r.Resolve(t.Context(), third, both)
	if !errors.Is(err, registry.ErrRateLimited) || !strings.Contains(err.Error(), "retry after 2026-01-01T01:00:00Z") {
		t.Fatalf("uncached after a 429: %v; want ErrRateLimited naming the Retry-After", err)
	}
	if reg.count("GET manifests") != 1 {
		t.Errorf("a 429 with Retry-After 3600 was tried %d times, want 1", reg.count("GET manifests"))
	}
	// Until Retry-After, an uncached image fails with no request at all...
	reg.reset()
	if _, err = r.Resolve(t.Context(), third, both); !errors.Is(err, registry.ErrRateLimited) || reg.total() != 0 {
		t.Fatalf("uncached while a 429 holds: %v after %v; want ErrRateLimited and no request", err, reg.counts)
	}
	// ...and a cached one is served, its RetryAfter stated.
	hub.set(50) // even if HEADs say the budget is back, the 429 holds
	reg.reset()
	res, err = r.Resolve(t.Context(), ref, both)
	if err != nil || res.Source != cache.Reserved || reg.count("GET manifests") != 0 {
		t.Fatalf("cached while a 429 holds: %+v, %v after %v; want Reserved, no GET", res, err, reg.counts)
	}
	if want := now.Add(time.Hour); !res.Why.RetryAfter.Equal(want) || !strings.Contains(res.Why.Reason, "429") {
		t.Errorf("Why = %+v; want RetryAfter %v and a reason naming the 429", res.Why, want)
	}

	// Once Retry-After has passed, with budget above the reserve, the
	// moved tag is pulled.
	clockMu.Lock()
	now = now.Add(time.Hour + time.Second)
	clockMu.Unlock()
	res, err = r.Resolve(t.Context(), ref, both)
	if err != nil || res.Source != cache.Pulled || res.Digest != d2 {
		t.Fatalf("after Retry-After: %+v, %v; want Pulled %s", res, err, d2)
	}
}

// The same moved tag without a reserve spends the pulls the reserve saves.
func TestNoRateLimitReservePullsAtTheLimit(t *testing.T) {
	reg := newFakeRegistry(t)
	hub := &hubDouble{remaining: 100}
	reg.setFault(hub.fault)
	ref := reg.host + "/library/app:1"
	push(t, ref, twoPlatformIndex(t, 512))
	r := newResolver(t, openStore(t))
	if _, err := r.Resolve(t.Context(), ref, both); err != nil {
		t.Fatal(err)
	}
	hub.set(3)
	d2 := push(t, ref, twoPlatformIndex(t, 512))
	reg.reset()
	res, err := r.Resolve(t.Context(), ref, both)
	if err != nil || res.Source != cache.Pulled || res.Digest != d2 {
		t.Fatalf("%+v, %v; want Pulled", res, err)
	}
	t.Logf("moved tag, no reserve: %v", reg.counts)
	if reg.count("GET manifests") != 3 {
		t.Errorf("%d manifest GETs, want 3", reg.count("GET manifests"))
	}
	if got := r.Stats().RateLimits[reg.host].Remaining; got != 0 {
		t.Errorf("remaining %d, want 0", got)
	}
}

// A HEAD without a digest would need a GET, which a reserve forbids.
func TestRateLimitReserveHeadWithoutDigest(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	d1 := push(t, ref, twoPlatformIndex(t, 512))
	r := newResolver(t, openStore(t), registry.WithRateLimitReserve(0))
	if _, err := r.Resolve(t.Context(), ref, both); err != nil {
		t.Fatal(err)
	}
	reg.setFault(func(w http.ResponseWriter, req *http.Request) bool {
		w.Header().Set("RateLimit", "limit=10, remaining=0, reset=30")
		if req.Method != http.MethodHead {
			return false
		}
		w.WriteHeader(http.StatusOK)
		return true
	})
	reg.reset()
	res, err := r.Resolve(t.Context(), ref, both)
	if err != nil || res.Source != cache.Reserved || res.Digest != d1 || reg.count("GET manifests") != 0 {
		t.Fatalf("%+v, %v after %v; want Reserved with no GET", res, err, reg.counts)
	}
	if !strings.Contains(res.Why.Reason, "no digest") {
		t.Errorf("reason %q does not say the HEAD gave no digest", res.Why.Reason)
	}
}
