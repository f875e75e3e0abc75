package localfs_test

import (
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/localfs"
)

// BenchmarkRootLookup is the index's share of a warm resolve: finding
// one root by name among n, with nothing changed on disk.
func BenchmarkRootLookup(b *testing.B) {
	for _, n := range []int{10, 1_000, 10_000} {
		b.Run(fmt.Sprintf("roots=%d", n), func(b *testing.B) {
			s, err := localfs.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			if err := s.UpdateIndex(b.Context(), func(im *v1.IndexManifest) error {
				for i := range n {
					im.Manifests = append(im.Manifests, namedRoot(fmt.Sprintf("image-%d", i), i))
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			want := fmt.Sprintf("image-%d", n/2)
			b.ResetTimer()
			for range b.N {
				if _, ok, err := s.Root(b.Context(), want); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
