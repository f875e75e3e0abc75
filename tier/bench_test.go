package tier_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/tier"
)

// BenchmarkNearHit: a 64 MiB read served by the near tier of a tiered
// cache vs the same read from the localfs store directly.
//
//	go test -run '^$' -bench NearHit -benchtime 20x -count 5 ./tier/
func BenchmarkNearHit(b *testing.B) {
	blob := cachetest.NewBlob(1, 64<<20)
	near, err := localfs.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if err := near.Put(b.Context(), blob.Digest, int64(len(blob.Data)), bytes.NewReader(blob.Data)); err != nil {
		b.Fatal(err)
	}
	tiered, _ := tier.New(near, mem(nil))
	for _, bc := range []struct {
		name string
		c    cache.LayerCache
	}{{"localfs-direct", near}, {"tier-near-hit", tiered}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(blob.Data)))
			for b.Loop() {
				rc, err := bc.c.Get(b.Context(), blob.Digest)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}
