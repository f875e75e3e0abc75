package memory_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/memory"
)

func newLayerCache(t *testing.T, maxBytes int64) *memory.LayerCache {
	t.Helper()
	c, err := memory.NewLayerCache(memory.WithLayerCacheMaxBytes(maxBytes))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLayerCacheConformance(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) cache.LayerCache { return newLayerCache(t, 256<<20) },
		cachetest.WithoutLargeBlob("memory holds every blob in memory by design"))
}

func TestLayerCacheEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := t.Context()
	c := newLayerCache(t, 3000)
	a, b, d := cachetest.NewBlob(1, 1000), cachetest.NewBlob(2, 1000), cachetest.NewBlob(3, 1000)
	for _, x := range []cachetest.Blob{a, b, d} {
		if err := c.Put(ctx, x.Digest, 1000, bytes.NewReader(x.Data)); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := c.Get(ctx, a.Digest) // a is now the most recently used
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	e := cachetest.NewBlob(4, 1000)
	if err := c.Put(ctx, e.Digest, 1000, bytes.NewReader(e.Data)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, b.Digest); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("least recently used blob still there: %v", err)
	}
	for _, x := range []cachetest.Blob{a, d, e} {
		if _, err := c.Stat(ctx, x.Digest); err != nil {
			t.Errorf("%s evicted: %v", x.Digest, err)
		}
	}
	if got := c.Size(); got != 3000 {
		t.Errorf("Size = %d, want 3000", got)
	}
	if s := c.Stats(); s.Evictions != 1 {
		t.Errorf("Evictions = %d, want 1", s.Evictions)
	}
}

func TestLayerCacheRefusesOversizeBeforeReading(t *testing.T) {
	c := newLayerCache(t, 100)
	b := cachetest.NewBlob(5, 101)
	r := &countReads{r: bytes.NewReader(b.Data)}
	if err := c.Put(t.Context(), b.Digest, 101, r); !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("Put over budget = %v, want ErrNoSpace", err)
	}
	if r.reads != 0 {
		t.Fatalf("read %d times before refusing a blob that cannot fit", r.reads)
	}
	// Unknown size: read no more than the budget allows.
	r = &countReads{r: bytes.NewReader(b.Data)}
	if err := c.Put(t.Context(), b.Digest, -1, r); !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("Put of unknown size over budget = %v, want ErrNoSpace", err)
	}
	if c.Len() != 0 {
		t.Fatal("an oversize blob was stored")
	}
}

type countReads struct {
	r     io.Reader
	reads int
}

func (c *countReads) Read(p []byte) (int, error) { c.reads++; return c.r.Read(p) }

func TestLayerCacheOptions(t *testing.T) {
	if _, err := memory.NewLayerCache(memory.WithLayerCacheMaxBytes(-1)); err == nil {
		t.Error("WithLayerCacheMaxBytes(-1) accepted")
	}
	c, err := memory.NewLayerCache() // no bound by default
	if err != nil {
		t.Fatal(err)
	}
	b := cachetest.NewBlob(6, 4<<20)
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatalf("Put into an unbounded cache: %v", err)
	}
}

// TestLayerCachePutDoesNotTrustTheDeclaredSize: a descriptor claiming a
// terabyte, with a few bytes behind it, fails as short and allocates
// nothing near the claim (it used to reserve the whole size up front and
// die of an out-of-memory error without a budget set).
func TestLayerCachePutDoesNotTrustTheDeclaredSize(t *testing.T) {
	c, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("not a terabyte")
	d, _, _ := v1.SHA256(bytes.NewReader(body))
	err = c.Put(t.Context(), d, 1<<40, bytes.NewReader(body))
	if !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("Put with a 1 TiB claim and %d bytes = %v, want ErrDigestMismatch", len(body), err)
	}
	if _, err := c.Stat(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Stat after the failed Put = %v, want ErrNotFound", err)
	}
}

func TestLayerCacheConformanceNoSpace(t *testing.T) {
	cachetest.RunNoSpace(t, func(t *testing.T, budget int64) cache.LayerCache {
		c, err := memory.NewLayerCache(memory.WithLayerCacheMaxBytes(budget))
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}
