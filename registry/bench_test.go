package registry_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

// reqCounter counts requests by method on the client side.
type reqCounter struct{ get, head, other atomic.Int64 }

func (c *reqCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.Method {
	case http.MethodGet:
		c.get.Add(1)
	case http.MethodHead:
		c.head.Add(1)
	default:
		c.other.Add(1)
	}
	return remote.DefaultTransport.RoundTrip(r)
}

func (c *reqCounter) report(b *testing.B) {
	b.ReportMetric(float64(c.get.Load())/float64(b.N), "GETs/op")
	b.ReportMetric(float64(c.head.Load())/float64(b.N), "HEADs/op")
}

// benchRegistry is a real registry server when one is installed (as in CI),
// else go-containerregistry's in-process one over loopback HTTP.
func benchRegistry(b *testing.B) string {
	if os.Getenv("BUILDCACHE_BENCH_INPROCESS") == "" {
		if srv := tryRealRegistry(b); srv != "" {
			return srv
		}
	}
	s := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	b.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func tryRealRegistry(b *testing.B) (host string) {
	defer func() {
		if recover() != nil {
			host = ""
		}
	}()
	if os.Getenv("CI") == "" {
		if _, err := os.Stat("/usr/bin/docker-registry"); err != nil {
			return ""
		}
	}
	return testserver.StartRegistry(b).Host
}

// pushBenchImage pushes a two-platform image of about perPlatform bytes per
// platform (2 layers each) and returns its reference.
func pushBenchImage(b *testing.B, host string, perPlatform int64) string {
	ref := host + "/bench/base:1"
	idx := twoPlatformIndex(b, perPlatform/2) // two layers per platform
	r, _ := name.ParseReference(ref)
	if err := remote.WriteIndex(r, idx); err != nil {
		b.Fatal(err)
	}
	return ref
}

// BenchmarkColdPull: a ~200 MB two-platform image into an empty store, vs
// go-containerregistry's remote.Index + layout.Write doing the same work.
//
//	go test -run '^$' -bench ColdPull -benchtime 3x -count 3 ./registry/
func BenchmarkColdPull(b *testing.B) {
	host := benchRegistry(b)
	ref := pushBenchImage(b, host, 100<<20)
	r, _ := name.ParseReference(ref)
	size := int64(200 << 20)

	b.Run("buildcache", func(b *testing.B) {
		b.SetBytes(size)
		rc := &reqCounter{}
		for b.Loop() {
			b.StopTimer()
			store, err := localfs.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			res, err := registry.NewResolver(store, registry.WithTransport(rc))
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := res.Resolve(b.Context(), ref, both); err != nil {
				b.Fatal(err)
			}
		}
		rc.report(b)
	})
	b.Run("ggcr-layout", func(b *testing.B) {
		b.SetBytes(size)
		rc := &reqCounter{}
		for b.Loop() {
			b.StopTimer()
			dir := b.TempDir()
			b.StartTimer()
			idx, err := remote.Index(r, remote.WithTransport(rc))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := layout.Write(dir, idx); err != nil {
				b.Fatal(err)
			}
		}
		rc.report(b)
	})
}

// BenchmarkWarmRevalidate: PullAlways on a warm store (one HEAD) vs
// remote.Head + remote.Image of the same reference.
//
//	go test -run '^$' -bench WarmRevalidate -count 5 ./registry/
func BenchmarkWarmRevalidate(b *testing.B) {
	host := benchRegistry(b)
	ref := pushBenchImage(b, host, 1<<20)
	r, _ := name.ParseReference(ref)

	b.Run("buildcache", func(b *testing.B) {
		store, err := localfs.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		rc := &reqCounter{}
		res, err := registry.NewResolver(store, registry.WithTransport(rc))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := res.Resolve(b.Context(), ref, cache.WithPlatforms("linux/amd64")); err != nil {
			b.Fatal(err)
		}
		rc.get.Store(0)
		rc.head.Store(0)
		for b.Loop() {
			got, err := res.Resolve(b.Context(), ref, cache.WithPlatforms("linux/amd64"))
			if err != nil || got.Source != cache.Revalidated {
				b.Fatalf("%v, %v", got, err)
			}
		}
		rc.report(b)
	})
	b.Run("ggcr-head+image", func(b *testing.B) {
		rc := &reqCounter{}
		for b.Loop() {
			if _, err := remote.Head(r, remote.WithTransport(rc)); err != nil {
				b.Fatal(err)
			}
			img, err := remote.Image(r, remote.WithTransport(rc))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := img.Manifest(); err != nil {
				b.Fatal(err)
			}
		}
		rc.report(b)
	})
}
