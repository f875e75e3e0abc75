package memory_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/memory"
)

// A small near tier: blobs are verified against their digest on Put, and
// the least recently used go first when the bound is reached.
func ExampleNewLayerCache() {
	ctx := context.Background()
	c, err := memory.NewLayerCache(memory.WithLayerCacheMaxBytes(64 << 20))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	blob := []byte("hello, layer")
	d, size, err := v1.SHA256(bytes.NewReader(blob))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Put(ctx, d, size, bytes.NewReader(blob)); err != nil {
		log.Fatal(err)
	}
	rc, err := c.Get(ctx, d)
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	fmt.Printf("%s, %d blob, %d bytes\n", got, c.Len(), c.Size())
	// Output: hello, layer, 1 blob, 12 bytes
}
