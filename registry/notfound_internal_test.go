package registry

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/regclient"
)

// The remembered 404s are bounded: the oldest goes first when full, and
// expired ones are dropped as new ones come.
func TestNotFoundCacheIsBounded(t *testing.T) {
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := newNotFoundCache(time.Minute, clock.Now)
	notFound := &regclient.RemoteError{Status: http.StatusNotFound}
	for i := range maxNotFound + 10 {
		c.note(fmt.Sprintf("r/app:%d", i), notFound)
	}
	if n := c.len(); n != maxNotFound {
		t.Errorf("%d remembered, want the cap %d", n, maxNotFound)
	}
	if _, ok := c.get("r/app:0"); ok {
		t.Error("the oldest is still remembered past the cap")
	}
	if _, ok := c.get(fmt.Sprintf("r/app:%d", maxNotFound+9)); !ok {
		t.Error("the newest is not remembered")
	}
	c.note("r/app:other", &regclient.RemoteError{Status: http.StatusServiceUnavailable})
	if _, ok := c.get("r/app:other"); ok {
		t.Error("a 503 was remembered as a 404")
	}
	clock.Advance(time.Minute)
	c.note("r/app:late", notFound)
	if n := c.len(); n != 1 {
		t.Errorf("%d remembered a TTL later, want only the new one", n)
	}
	c.note("r/app:late", nil)
	if _, ok := c.get("r/app:late"); ok {
		t.Error("a reference found again is still remembered as missing")
	}
}
