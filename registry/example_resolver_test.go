package registry_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

func ExampleResolver_Resolve() {
	// A registry on loopback with one image in it.
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/flink:1.14.5"
	img, _ := random.Image(1024, 2)
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img); err != nil {
		panic(err)
	}

	dir, _ := os.MkdirTemp("", "buildcache")
	defer os.RemoveAll(dir)
	store, _ := localfs.Open(dir)
	defer store.Close()
	resolver, _ := registry.NewResolver(store)
	ctx := context.Background()

	for _, policy := range []cache.PullPolicy{cache.PullAlways, cache.PullAlways, cache.PullIfNotPresent} {
		res, err := resolver.Resolve(ctx, ref, cache.WithPolicy(policy))
		if err != nil {
			panic(err)
		}
		fmt.Printf("%-14s -> %s\n", policy, res.Source)
	}
	// Output:
	// always         -> pulled
	// always         -> revalidated
	// if-not-present -> hit
}
