package tier_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/tier"
)

// A read that misses the near tier is served by the far one and fills the
// near tier on the way, so the next read is near.
func Example() {
	ctx := context.Background()
	near, err := memory.NewLayerCache() // a runner's own disk, say
	if err != nil {
		log.Fatal(err)
	}
	far, err := memory.NewLayerCache() // the bucket every runner shares
	if err != nil {
		log.Fatal(err)
	}
	c, err := tier.New(near, far)
	if err != nil {
		log.Fatal(err)
	}

	// Another runner put a layer in the shared tier.
	layer := []byte("a layer another runner built")
	d, _, err := v1.SHA256(bytes.NewReader(layer))
	if err != nil {
		log.Fatal(err)
	}
	if err := far.Put(ctx, d, int64(len(layer)), bytes.NewReader(layer)); err != nil {
		log.Fatal(err)
	}

	for range 2 {
		rc, err := c.Get(ctx, d)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			log.Fatal(err)
		}
		rc.Close() // the near copy is complete once the reader is closed
	}
	st := c.StatsByTier()
	fmt.Printf("far hits %d, fills %d, near hits %d\n", st.FarHits, st.Fills, st.NearHits)
	// Output:
	// far hits 1, fills 1, near hits 1
}
