package captest

import (
	"context"
	"testing"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/s3"
)

// S3Leases is a cachetest.LeaseHarness for c, an s3.Cache or a
// composition over one (found with cache.As): its collector is a second
// s3.Cache on the same bucket and prefix running GC with a budget of 0
// and no minimum age, as another process's `buildcache gc --max-bytes 0
// --min-age 0` on the bucket would.
func S3Leases(t testing.TB, c cache.LayerCache) cachetest.LeaseHarness {
	t.Helper()
	store, ok := cache.As[*s3.Cache](c)
	if !ok {
		if tc, isTier := c.(cache.Tiered); isTier {
			store, ok = tc.Far().(*s3.Cache)
		}
	}
	if !ok {
		t.Fatalf("captest: %T has no s3.Cache in it", c)
	}
	var client *awss3.Client
	store.As(&client)
	collector, err := s3.New(client, store.Bucket(), store.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	return cachetest.LeaseHarness{
		Cache: c,
		Collect: func(ctx context.Context) error {
			_, err := collector.GC(ctx, s3.GCMaxBytes(0), s3.GCMinAge(0))
			return err
		},
		Holds: func(ctx context.Context, d v1.Hash) bool {
			_, err := collector.Stat(ctx, d)
			return err == nil
		},
	}
}
