package tier_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/tier"
)

// pushRandom pushes a random image to an in-process registry and returns
// its reference and digest.
func pushRandom(t *testing.T) (string, v1.Hash) {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New())
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/base:1"
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref, d
}

// recorded is the digest the index's root for ref names, if any.
func recorded(t *testing.T, ri cache.RootIndex, ref string) (v1.Hash, bool) {
	t.Helper()
	im, err := ri.Index(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range im.Manifests {
		if strings.HasSuffix(m.Annotations[cache.AnnotationRefName], strings.SplitN(ref, "/", 2)[1]) {
			return m.Digest, true
		}
	}
	return v1.Hash{}, false
}

// TestResolverRecordsInNearIndex checks that a resolver over a tier keeps
// its records in the near tier's index, so that they outlive the process.
func TestResolverRecordsInNearIndex(t *testing.T) {
	ctx := context.Background()
	ref, want := pushRandom(t)
	dir := t.TempDir()
	open := func() *tier.Cache {
		near, err := localfs.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tier.New(near, mem(t))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	res, err := registry.NewResolver(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Resolve(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if got, ok := recorded(t, c.Near().(cache.RootIndex), ref); !ok || got != want {
		t.Fatalf("near index records %s (%v), want %s", got, ok, want)
	}

	// A new process: the store reopened, a new tier over it.
	again := open()
	if got, ok := recorded(t, again, ref); !ok || got != want {
		t.Errorf("after reopening, the tier's index records %s (%v), want %s", got, ok, want)
	}
}

// TestIndexInMemoryWithoutNearIndex checks that a tier whose near tier
// keeps no index still records roots, in memory, as the resolver would.
func TestIndexInMemoryWithoutNearIndex(t *testing.T) {
	ctx := context.Background()
	ref, want := pushRandom(t)
	c, err := tier.New(mem(t), mem(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Near().(cache.RootIndex); ok {
		t.Fatal("the memory near tier keeps an index: the test needs one without")
	}
	res, err := registry.NewResolver(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Resolve(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if got, ok := recorded(t, c, ref); !ok || got != want {
		t.Errorf("index records %s (%v), want %s", got, ok, want)
	}
	// A failed update changes nothing.
	err = c.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		im.Manifests = nil
		return context.Canceled
	})
	if err != context.Canceled {
		t.Fatalf("UpdateIndex = %v, want the callback's error", err)
	}
	if _, ok := recorded(t, c, ref); !ok {
		t.Error("a failed UpdateIndex dropped the roots")
	}
}

func TestNearFar(t *testing.T) {
	near, far := disk(t), mem(t)
	c, err := tier.New(near, far)
	if err != nil {
		t.Fatal(err)
	}
	if c.Near() != cache.LayerCache(near) || c.Far() != cache.LayerCache(far) {
		t.Errorf("Near, Far = %T, %T; want the tiers given to New", c.Near(), c.Far())
	}
}
