package localfs_test

import (
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

func newStore(t *testing.T, opts ...localfs.Option) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // before TempDir's removal: no flush races it
	return s
}

// corrupt damages a blob file in place, as a failing disk would.
func corrupt(t *testing.T, c cache.LayerCache, d v1.Hash, how cachetest.Corruption) {
	t.Helper()
	p := filepath.Join(c.(*localfs.Store).Dir(), "blobs", "sha256", d.Hex)
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	switch how {
	case cachetest.Truncate:
		err = os.Truncate(p, info.Size()/2)
	case cachetest.FlipByte:
		var b []byte
		if b, err = os.ReadFile(p); err == nil {
			b[len(b)/2] ^= 0x40
			err = os.WriteFile(p, b, 0o644)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) cache.LayerCache { return newStore(t) }, cachetest.WithCorrupter(corrupt))
}

func TestConformanceWithBudget(t *testing.T) {
	// The budget path (eviction bookkeeping, locks) must keep every rule too.
	cachetest.Run(t, func(t *testing.T) cache.LayerCache {
		return newStore(t, localfs.WithMaxBytes(1<<30), localfs.WithMinFreeBytes(1<<20))
	}, cachetest.WithCorrupter(corrupt), cachetest.WithoutLargeBlob("covered by TestConformance"))
}
