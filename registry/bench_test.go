package registry_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

// reqCounter counts requests by method on the client side.
type reqCounter struct {
	base             http.RoundTripper // remote.DefaultTransport if nil
	get, head, other atomic.Int64
}

func (c *reqCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.Method {
	case http.MethodGet:
		c.get.Add(1)
	case http.MethodHead:
		c.head.Add(1)
	default:
		c.other.Add(1)
	}
	if c.base != nil {
		return c.base.RoundTrip(r)
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
// go-containerregistry's remote.Index + layout.Write doing the same work
// (the same two platforms, from the same registry, through the same
// transport; each iteration gets a fresh directory).
//
//	go test -run '^$' -bench ColdPull -benchtime 3x -count 3 ./registry/
//
// "pair" runs both in each iteration, alternating which goes first, and
// reports each side's MB/s and their ratio (ggcr's time / ours: 1.0 or more
// means at least as fast); on a noisy machine it is the figure to quote.
// Its ns/op is the two pulls together. Before each pull, untimed, dirty
// pages are synced, so that no pull pays for writeback it did not cause
// (the push's, the other side's); each directory is removed after its
// pull. ggcr's layout.Write syncs
// nothing, so its bytes may still be only in memory when it returns; ours
// are on disk.
func BenchmarkColdPull(b *testing.B) {
	host := benchRegistry(b)
	ref := pushBenchImage(b, host, 100<<20)
	size := int64(200 << 20)
	// One transport for both sides, as remote.DefaultTransport is set up;
	// its idle connections are shared.
	base := remote.DefaultTransport.(*http.Transport).Clone()
	b.Cleanup(base.CloseIdleConnections)

	b.Run("buildcache", func(b *testing.B) {
		b.SetBytes(size)
		rc := &reqCounter{base: base}
		for b.Loop() {
			coldPull(b, coldPullBuildcache(b, rc, ref))
		}
		rc.report(b)
	})
	b.Run("ggcr-layout", func(b *testing.B) {
		b.SetBytes(size)
		rc := &reqCounter{base: base}
		for b.Loop() {
			coldPull(b, coldPullGGCR(b, rc, ref))
		}
		rc.report(b)
	})
	b.Run("pair", func(b *testing.B) {
		rc := &reqCounter{base: base}
		var ours, theirs, oursCPU, theirsCPU time.Duration
		var ratios []float64
		for b.Loop() {
			var o, t time.Duration
			sides := []func(){
				func() {
					c := cpuTime()
					o = coldPull(b, coldPullBuildcache(b, rc, ref))
					oursCPU += cpuTime() - c
				},
				func() {
					c := cpuTime()
					t = coldPull(b, coldPullGGCR(b, rc, ref))
					theirsCPU += cpuTime() - c
				},
			}
			if len(ratios)%2 == 1 {
				sides[0], sides[1] = sides[1], sides[0]
			}
			for _, side := range sides {
				side()
			}
			ours, theirs = ours+o, theirs+t
			ratios = append(ratios, t.Seconds()/o.Seconds())
		}
		slices.Sort(ratios)
		mb := float64(size) / 1e6 * float64(b.N)
		b.ReportMetric(mb/ours.Seconds(), "buildcache-MB/s")
		b.ReportMetric(mb/theirs.Seconds(), "ggcr-MB/s")
		b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
		// The median of the iterations' ratios, each from two pulls close
		// in time, resists a burst of load that hits a few of them.
		b.ReportMetric(ratios[len(ratios)/2], "ratio-median")
		// CPU time of this process (the registry's is not counted), less
		// noisy than wall time on a shared machine.
		b.ReportMetric(float64(oursCPU.Milliseconds())/float64(b.N), "buildcache-cpu-ms/op")
		b.ReportMetric(float64(theirsCPU.Milliseconds())/float64(b.N), "ggcr-cpu-ms/op")
	})
}

// coldPull times a pull into a fresh, empty directory. Untimed around it:
// setup (opening the store), then a sync of the dirty page cache, so the
// pull does not share the disk with an earlier one's writeback; and the
// directory's removal after.
func coldPull(b *testing.B, setup func(dir string) (pull func())) time.Duration {
	b.StopTimer()
	dir, err := os.MkdirTemp("", "coldpull-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	pull := setup(dir)
	syscall.Sync()
	b.StartTimer()
	start := time.Now()
	pull()
	d := time.Since(start)
	b.StopTimer()
	os.RemoveAll(dir)
	b.StartTimer()
	return d
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// coldPullBuildcache opens a store in dir and returns a Resolve of ref
// into it, the part to time.
func coldPullBuildcache(b *testing.B, rt http.RoundTripper, ref string) func(dir string) func() {
	return func(dir string) func() {
		store, err := localfs.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		res, err := registry.NewResolver(store, withClient(b, regclient.WithTransport(rt)))
		if err != nil {
			b.Fatal(err)
		}
		return func() {
			if _, err := res.Resolve(b.Context(), ref, both); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// coldPullGGCR returns remote.Index of ref and layout.Write into dir.
func coldPullGGCR(b *testing.B, rt http.RoundTripper, ref string) func(dir string) func() {
	r, err := name.ParseReference(ref)
	if err != nil {
		b.Fatal(err)
	}
	return func(dir string) func() {
		return func() {
			idx, err := remote.Index(r, remote.WithTransport(rt), remote.WithContext(b.Context()))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := layout.Write(dir, idx); err != nil {
				b.Fatal(err)
			}
		}
	}
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
		res, err := registry.NewResolver(store, withClient(b, regclient.WithTransport(rc)))
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
