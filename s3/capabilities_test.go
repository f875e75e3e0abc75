package s3_test

import (
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/captest"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
)

// TestCapabilityLeaser runs the lease suite localfs runs on the bucket's
// leases, with another process's collector of the bucket.
func TestCapabilityLeaser(t *testing.T) {
	srv := testserver.StartS3(t)
	cachetest.RunLeaser(t, func(t *testing.T) cachetest.LeaseHarness {
		return captest.S3Leases(t, cache.LayerCache(newCache(t, srv)))
	})
}

// TestCapabilityRootIndex runs the root suite on the bucket's records.
func TestCapabilityRootIndex(t *testing.T) {
	srv := testserver.StartS3(t)
	cachetest.RunRootIndex(t, func(t *testing.T) cache.LayerCache { return newCache(t, srv) })
}

// TestCapabilityRevalidationClaimer runs the claim suite on two Caches
// of one bucket.
func TestCapabilityRevalidationClaimer(t *testing.T) {
	srv := testserver.StartS3(t)
	cachetest.RunRevalidationClaimer(t, func(t *testing.T) (cache.LayerCache, cache.LayerCache) {
		a := newCache(t, srv)
		b, err := s3cache.New(srv.Client(), a.Bucket(), a.Prefix())
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	})
}
