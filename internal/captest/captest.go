// Package captest holds the harnesses that the capability suites of
// cache/cachetest need over this module's real backends, shared by the
// tests of localfs, tier and buildcache.Open so that each runs the same
// suite on a store and on the compositions built from it.
package captest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// LocalLeases is a cachetest.LeaseHarness for c, a localfs store or a
// composition whose near store is one (found with cache.As): its
// collector is a second Store on the same directory running GC with a
// one-byte budget, as another process's `buildcache gc --max-bytes 1`
// would.
func LocalLeases(t testing.TB, c cache.LayerCache) cachetest.LeaseHarness {
	t.Helper()
	store, ok := cache.As[*localfs.Store](c)
	if !ok {
		t.Fatalf("captest: %T has no localfs store under it", c)
	}
	collector, err := localfs.Open(store.Dir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { collector.Close() })
	return cachetest.LeaseHarness{
		Cache: c,
		Collect: func(ctx context.Context) error {
			_, err := collector.GC(ctx, localfs.GCMaxBytes(1))
			return err
		},
		Holds: func(ctx context.Context, d v1.Hash) bool {
			_, err := collector.Stat(ctx, d)
			return err == nil
		},
	}
}

// CorruptLocal is a cachetest.Corrupter for c, a localfs store or a
// composition whose near store is one (found with cache.As): it damages
// the blob's file in place, as a failing disk or another program would.
func CorruptLocal(t *testing.T, c cache.LayerCache, d v1.Hash, how cachetest.Corruption) {
	t.Helper()
	store, ok := cache.As[*localfs.Store](c)
	if !ok {
		t.Fatalf("captest: %T has no localfs store under it", c)
	}
	p := filepath.Join(store.Dir(), "blobs", "sha256", d.Hex)
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
