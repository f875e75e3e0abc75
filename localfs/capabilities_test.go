package localfs_test

import (
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/captest"
	"github.com/buildcache/buildcache/localfs"
)

// The capability suites on the store itself; tier and buildcache.Open run
// the same suites on the compositions built from it.

func TestCapabilityRootIndex(t *testing.T) {
	cachetest.RunRootIndex(t, func(t *testing.T) cache.LayerCache { return newStore(t) })
}

func TestCapabilityDeferredSync(t *testing.T) {
	cachetest.RunDeferredSync(t, func(t *testing.T) cache.LayerCache { return newStore(t) })
}

func TestCapabilityIngester(t *testing.T) {
	cachetest.RunIngester(t, func(t *testing.T) cache.LayerCache { return newStore(t) })
}

func TestCapabilityWriteProber(t *testing.T) {
	cachetest.RunWriteProber(t, func(t *testing.T) cache.LayerCache { return newStore(t) })
}

func TestCapabilityLeaser(t *testing.T) {
	cachetest.RunLeaser(t, func(t *testing.T) cachetest.LeaseHarness {
		return captest.LocalLeases(t, newStore(t))
	})
}

func TestConformanceNoSpace(t *testing.T) {
	cachetest.RunNoSpace(t, func(t *testing.T, budget int64) cache.LayerCache {
		return newStore(t, localfs.WithMaxBytes(budget))
	})
}
