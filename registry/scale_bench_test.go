package registry_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

// rootCounts are the store sizes the scale benchmarks compare: the cost
// of a resolve should not grow with them (issue 12).
var rootCounts = []int{10, 1_000, 10_000}

// scaleRig is a store holding n roots and a registry that serves one
// image under any tag, so that each cold resolve can ask for a new tag.
type scaleRig struct {
	store *localfs.Store
	host  string
	top   v1.Hash
}

func newScaleRig(b *testing.B, n int) *scaleRig {
	b.Helper()
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every tag of app is app:base.
		if i := strings.Index(r.URL.Path, "/manifests/t-"); i >= 0 {
			r.URL.Path = r.URL.Path[:i] + "/manifests/base"
		}
		reg.ServeHTTP(w, r)
	}))
	b.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	top := testimage.ForTest(b).Push(host+"/app:base", testimage.ForTest(b).RandomIndex([]string{"linux/amd64"}, 256, 1))
	store, err := localfs.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	rig := &scaleRig{store: store, host: host, top: top}
	// The n roots, written at once rather than by n resolves.
	at := time.Now().UTC().Format(time.RFC3339Nano)
	if err := store.UpdateIndex(b.Context(), func(im *v1.IndexManifest) error {
		for i := range n {
			im.Manifests = append(im.Manifests, v1.Descriptor{
				MediaType: "application/vnd.oci.image.index.v1+json",
				Size:      1234,
				Digest:    v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", i)},
				Annotations: map[string]string{
					cache.AnnotationRefName:    fmt.Sprintf("%s/pre/image-%d:latest", host, i),
					cache.AnnotationResolvedAt: at,
				},
			})
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return rig
}

func (rig *scaleRig) resolver(b *testing.B) *registry.Resolver {
	r, err := registry.NewResolver(rig.store, registry.WithDefaultPlatforms("linux/amd64"))
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkScaleRoots measures a resolve's cost by the number of roots
// the store already holds: a cold resolve of a new tag (its blobs are
// already stored: what is measured is finding and recording the root), a
// warm PullIfNotPresent hit, and a PullAlways revalidation (one HEAD).
// held-B/root is the heap the store keeps for its view of the roots.
func BenchmarkScaleRoots(b *testing.B) {
	for _, n := range rootCounts {
		b.Run(fmt.Sprintf("cold/roots=%d", n), func(b *testing.B) {
			rig := newScaleRig(b, n)
			r := rig.resolver(b)
			ctx := b.Context()
			if _, err := r.Resolve(ctx, rig.host+"/app:base"); err != nil { // the blobs
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				res, err := r.Resolve(ctx, fmt.Sprintf("%s/app:t-%d", rig.host, i), cache.WithPolicy(cache.PullIfNotPresent))
				if err != nil || res.Digest != rig.top {
					b.Fatalf("cold resolve = %+v, %v", res, err)
				}
			}
		})
		b.Run(fmt.Sprintf("warm/roots=%d", n), func(b *testing.B) {
			rig := newScaleRig(b, n)
			r := rig.resolver(b)
			ctx := b.Context()
			ref := rig.host + "/app:base"
			if _, err := r.Resolve(ctx, ref); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				res, err := r.Resolve(ctx, ref, cache.WithPolicy(cache.PullIfNotPresent))
				if err != nil || res.Source != cache.Hit {
					b.Fatalf("warm resolve = %+v, %v", res, err)
				}
			}
		})
		b.Run(fmt.Sprintf("revalidate/roots=%d", n), func(b *testing.B) {
			rig := newScaleRig(b, n)
			r := rig.resolver(b)
			ctx := b.Context()
			ref := rig.host + "/app:base"
			if _, err := r.Resolve(ctx, ref); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				res, err := r.Resolve(ctx, ref, cache.WithPolicy(cache.PullAlways))
				if err != nil || res.Source != cache.Revalidated {
					b.Fatalf("revalidation = %+v, %v", res, err)
				}
			}
		})
		b.Run(fmt.Sprintf("memory/roots=%d", n), func(b *testing.B) {
			rig := newScaleRig(b, n)
			dir := rig.store.Dir()
			var held float64
			for range b.N {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				s, err := localfs.Open(dir)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Index(b.Context()); err != nil { // builds the view, where there is one
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				held = float64(after.HeapAlloc) - float64(before.HeapAlloc)
				runtime.KeepAlive(s)
			}
			b.ReportMetric(held/float64(n), "held-B/root")
		})
	}
}
