package memory_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/memory"
)

func TestLayerCacheConformance(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) cache.LayerCache { return memory.NewLayerCache(256 << 20) },
		cachetest.WithoutLargeBlob("memory holds every blob in memory by design"))
}

func TestLayerCacheEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := t.Context()
	c := memory.NewLayerCache(3000)
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
	c := memory.NewLayerCache(100)
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
