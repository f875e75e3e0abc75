package cachetest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// A backend runs the suite from a test of its own, here a directory
// backend that can be damaged from outside and so passes a Corrupter.
// Run needs that test's *testing.T, which an example does not have: this
// example compiles but does not run. Its body is what goes into the
// backend's func TestConformance(t *testing.T); localfs_test.go holds the
// real one.
func ExampleRun() {
	conformance := func(t *testing.T) {
		corrupt := func(t *testing.T, c cache.LayerCache, d v1.Hash, how cachetest.Corruption) {
			p := filepath.Join(c.(*localfs.Store).Dir(), "blobs", "sha256", d.Hex)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if how == cachetest.Truncate {
				b = b[:len(b)/2]
			} else {
				b[len(b)/2] ^= 0xff
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cachetest.Run(t, func(t *testing.T) cache.LayerCache {
			s, err := localfs.Open(t.TempDir()) // a new, empty cache each time
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, cachetest.WithCorrupter(corrupt), cachetest.WithLargeBlobSize(64<<20))
	}
	_ = conformance // in a _test.go file: func TestConformance(t *testing.T) { ... }
}

// NewBlob makes the same content from the same seed, so a test can make
// a blob again to compare instead of keeping it.
func ExampleNewBlob() {
	b := cachetest.NewBlob(1, 1000)
	again := cachetest.NewBlob(1, 1000)
	fmt.Println(len(b.Data), b.Digest == again.Digest, b.Digest == cachetest.Digest(b.Data))
	fmt.Println(b.Digest == cachetest.NewBlob(2, 1000).Digest)
	// Output:
	// 1000 true true
	// false
}

func ExampleDigest() {
	fmt.Println(cachetest.Digest([]byte("hello")))
	// Output: sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
}
