package ocirepo_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/ocirepo"
)

func ExampleNew() {
	// A registry on loopback; in a CI fleet, a Harbor or distribution
	// repository every runner can push to.
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	repo := strings.TrimPrefix(srv.URL, "http://") + "/ci/buildcache"
	ctx := context.Background()

	// One runner stores a blob...
	runner1, err := ocirepo.New(repo)
	if err != nil {
		panic(err)
	}
	defer runner1.Close()
	blob := []byte("a layer, a config or a BuildKit cache blob")
	d, size, _ := v1.SHA256(bytes.NewReader(blob))
	if err := runner1.Put(ctx, d, size, bytes.NewReader(blob)); err != nil {
		panic(err)
	}

	// ...and another one finds it, listed in the index and verified.
	runner2, err := ocirepo.New(repo)
	if err != nil {
		panic(err)
	}
	defer runner2.Close()
	err = runner2.Walk(ctx, func(d v1.Hash, size int64) error {
		fmt.Printf("listed: %s... (%d bytes)\n", d.Hex[:12], size)
		return nil
	})
	if err != nil {
		panic(err)
	}
	rc, err := runner2.Get(ctx, d)
	if err != nil {
		panic(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		panic(err)
	}
	fmt.Printf("got: %s\n", got)
	fmt.Printf("runner 2: %d hit, %d bytes out\n", runner2.Stats().Hits, runner2.Stats().BytesOut)
	// Output:
	// listed: 8223202af59c... (42 bytes)
	// got: a layer, a config or a BuildKit cache blob
	// runner 2: 1 hit, 42 bytes out
}
