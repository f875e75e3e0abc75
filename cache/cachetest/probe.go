package cachetest

import (
	"context"
	"io"
	"testing"

	"github.com/buildcache/buildcache/cache"
)

// RunWriteProber checks cache.WriteProber: an open store passes, again
// and again, and a probe stores nothing, evicts nothing and counts no
// error; a probe whose
// context is done fails, and so does one after Close when the store has
// one. A full or read-only file system is the backend's own test (it
// needs one). newCache must return a new, empty store each time.
func RunWriteProber(t *testing.T, newCache func(t *testing.T) cache.LayerCache) {
	t.Run("OpenStorePasses", func(t *testing.T) {
		c, p := openAs[cache.WriteProber](t, newCache)
		b := NewBlob(801, 300)
		put(t, c, b)
		before := statsOf(c)
		for i := range 3 {
			if err := p.ProbeWrite(ctxT(t)); err != nil {
				t.Fatalf("probe %d of an open store: %v", i, err)
			}
		}
		if got := walkAll(t, c); len(got) != 1 || got[b.Digest] != int64(len(b.Data)) {
			t.Fatalf("after the probes the store holds %v, want only the blob put", got)
		}
		// BytesIn and the like may still move with a tier's background
		// far write of the blob put; what a probe must not do is evict or
		// fail.
		if after := statsOf(c); after.Evictions != before.Evictions || after.Errors != before.Errors {
			t.Fatalf("probes evicted or counted errors: %+v, then %+v", before, after)
		}
	})
	t.Run("DoneContextFails", func(t *testing.T) {
		_, p := openAs[cache.WriteProber](t, newCache)
		ctx, cancel := context.WithCancel(ctxT(t))
		cancel()
		if err := p.ProbeWrite(ctx); err == nil {
			t.Fatal("a probe with a cancelled context passed")
		}
	})
	t.Run("ClosedStoreFails", func(t *testing.T) {
		c, p := openAs[cache.WriteProber](t, newCache)
		cl, ok := c.(io.Closer)
		if !ok {
			t.Skipf("%T has no Close", c)
		}
		if err := cl.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.ProbeWrite(ctxT(t)); err == nil {
			t.Fatal("a probe of a closed store passed")
		}
	})
}

// statsOf is c's Stats, or zero when it reports none.
func statsOf(c cache.LayerCache) cache.Stats {
	if sr, ok := c.(cache.StatsReporter); ok {
		return sr.Stats()
	}
	return cache.Stats{}
}
