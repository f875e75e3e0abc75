package tier_test

import (
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/captest"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// The capability suites that localfs runs on itself run here on the tiers
// built over it, with a memory and an S3 (versitygw) far tier: a tier must
// keep each guarantee its near tier gives, or a resolver or mirror over it
// silently loses it (no lease, a scan per lookup, a sync per blob).

func overDisk(t *testing.T, far func(*testing.T) cache.LayerCache) *tier.Cache {
	c, err := tier.New(disk(t), far(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCapabilities(t *testing.T) {
	for _, ft := range []struct {
		name string
		far  func(t *testing.T) func(*testing.T) cache.LayerCache // per test: per store
	}{
		{"memory", func(*testing.T) func(*testing.T) cache.LayerCache {
			return func(t *testing.T) cache.LayerCache { return mem(t) }
		}},
		{"s3", func(t *testing.T) func(*testing.T) cache.LayerCache {
			srv := testserver.StartS3(t)
			return func(t *testing.T) cache.LayerCache {
				c, err := s3.New(srv.Client(), srv.NewBucket(t), "cache/")
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
		}},
	} {
		t.Run("localfs+"+ft.name, func(t *testing.T) {
			far := ft.far(t)
			t.Run("RootIndex", func(t *testing.T) {
				cachetest.RunRootIndex(t, func(t *testing.T) cache.LayerCache { return overDisk(t, far) })
			})
			t.Run("DeferredSync", func(t *testing.T) {
				cachetest.RunDeferredSync(t, func(t *testing.T) cache.LayerCache { return overDisk(t, far) })
			})
			t.Run("Ingester", func(t *testing.T) {
				cachetest.RunIngester(t, func(t *testing.T) cache.LayerCache { return overDisk(t, far) })
			})
			t.Run("WriteProber", func(t *testing.T) {
				cachetest.RunWriteProber(t, func(t *testing.T) cache.LayerCache { return overDisk(t, far) })
			})
			t.Run("Leaser", func(t *testing.T) {
				cachetest.RunLeaser(t, func(t *testing.T) cachetest.LeaseHarness {
					return captest.LocalLeases(t, overDisk(t, far))
				})
			})
		})
	}
}

// A near tier that cannot take a blob fails the Put with ErrNoSpace: the
// tier does not pretend it is stored because the far tier could hold it.
func TestConformanceNoSpace(t *testing.T) {
	cachetest.RunNoSpace(t, func(t *testing.T, budget int64) cache.LayerCache {
		near, err := localfs.Open(t.TempDir(), localfs.WithMaxBytes(budget))
		if err != nil {
			t.Fatal(err)
		}
		c, err := tier.New(near, mem(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	})
}
