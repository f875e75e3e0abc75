package localfs_test

import (
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/captest"
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
var corrupt cachetest.Corrupter = captest.CorruptLocal

func TestConformance(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) cache.LayerCache { return newStore(t) }, cachetest.WithCorrupter(corrupt))
}

func TestConformanceWithBudget(t *testing.T) {
	// The budget path (eviction bookkeeping, locks) must keep every rule too.
	cachetest.Run(t, func(t *testing.T) cache.LayerCache {
		return newStore(t, localfs.WithMaxBytes(1<<30), localfs.WithMinFreeBytes(1<<20))
	}, cachetest.WithCorrupter(corrupt), cachetest.WithoutLargeBlob("covered by TestConformance"))
}
