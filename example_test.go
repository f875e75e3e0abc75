package buildcache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
)

// A build step asks the store before it downloads, and the store never
// serves bytes that do not match their digest.
func Example() {
	dir, _ := os.MkdirTemp("", "buildcache")
	defer os.RemoveAll(dir)
	store, err := localfs.Open(dir)
	if err != nil {
		panic(err)
	}
	defer store.Close()
	ctx := context.Background()
	layer := []byte("a layer of a base image")
	d, size, _ := v1.SHA256(bytes.NewReader(layer))

	for range 2 {
		rc, err := store.Get(ctx, d)
		if errors.Is(err, cache.ErrNotFound) {
			fmt.Println("miss: download and keep it")
			if err := store.Put(ctx, d, size, bytes.NewReader(layer)); err != nil {
				panic(err)
			}
			continue
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		fmt.Printf("hit: %q\n", b)
	}

	// Bytes that do not match their digest are refused; nothing is stored.
	other := []byte("other bytes")
	d2, _, _ := v1.SHA256(bytes.NewReader([]byte("what the registry promised")))
	err = store.Put(ctx, d2, int64(len(other)), bytes.NewReader(other))
	fmt.Println(errors.Is(err, cache.ErrDigestMismatch))
	// A digest that could escape the directory never reaches a path.
	_, err = cache.ParseDigest("sha256:../../etc/passwd")
	fmt.Println(errors.Is(err, cache.ErrInvalidDigest))

	st := store.Stats()
	fmt.Printf("hits %d, misses %d\n", st.Hits, st.Misses)
	// Output:
	// miss: download and keep it
	// hit: "a layer of a base image"
	// true
	// true
	// hits 1, misses 1
}
