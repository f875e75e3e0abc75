// Command quickstart shows the base-image resolver saving downloads, with
// no network beyond loopback: it starts an in-process registry on
// 127.0.0.1, pushes a generated linux/amd64 + linux/arm64 image, and
// resolves it cold, warm (PullAlways: one HEAD), warm (PullIfNotPresent:
// nothing), after the tag moves to an image sharing most layers, and with
// the registry stopped (the cached copy is served as stale). It prints, for
// each step, the source, the HTTP requests by method, the bytes downloaded
// and the time taken.
//
//	go run ./examples/quickstart [-cache DIR] [-mib 100]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

func main() {
	cacheDir := flag.String("cache", "", "store directory (default: a temporary one, removed at exit)")
	mib := flag.Int64("mib", 100, "size of each platform's layers, in MiB")
	flag.Parse()
	if err := run(context.Background(), *cacheDir, *mib); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// meter counts what the registry serves.
type meter struct {
	mu       sync.Mutex
	requests map[string]int
	bytes    int64
}

func (m *meter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.requests[r.Method]++
		m.mu.Unlock()
		h.ServeHTTP(&countingWriter{ResponseWriter: w, m: m}, r)
	})
}

func (m *meter) take() (map[string]int, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	req, b := m.requests, m.bytes
	m.requests, m.bytes = map[string]int{}, 0
	return req, b
}

type countingWriter struct {
	http.ResponseWriter
	m *meter
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.m.mu.Lock()
	w.m.bytes += int64(n)
	w.m.mu.Unlock()
	return n, err
}

func run(ctx context.Context, cacheDir string, mib int64) error {
	if cacheDir == "" {
		tmp, err := os.MkdirTemp("", "buildcache-quickstart-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		cacheDir = tmp
	}

	// An in-process registry on loopback, counting what it serves.
	m := &meter{requests: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: m.wrap(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))}
	go srv.Serve(l)
	defer srv.Close()
	ref := l.Addr().String() + "/flink:1.14.5-scala_2.11"

	fmt.Printf("pushing a linux/amd64 + linux/arm64 image (%d MiB of layers per platform) to %s\n", mib, ref)
	base, err := makeLayers(4, mib<<20/5) // shared by both versions of the tag
	if err != nil {
		return err
	}
	if err := push(ref, base, mib<<20/5); err != nil {
		return err
	}
	m.take()

	store, err := localfs.Open(cacheDir)
	if err != nil {
		return err
	}
	defer store.Close()
	resolver, err := registry.NewResolver(store)
	if err != nil {
		return err
	}
	fmt.Printf("store: %s\n\n", store.Dir())
	platforms := cache.WithPlatforms("linux/amd64", "linux/arm64")

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "step\tsource\trequests\tdownloaded\ttime\tdigest")
	var staleNote string
	step := func(label string, opts ...cache.ResolveOption) error {
		start := time.Now()
		res, err := resolver.Resolve(ctx, ref, append([]cache.ResolveOption{platforms}, opts...)...)
		took := time.Since(start)
		reqs, n := m.take()
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", label, res.Source, formatRequests(reqs), formatBytes(n),
			took.Round(time.Millisecond), res.Digest.Hex[:12])
		if res.Source == cache.Stale {
			staleNote = shorten(res.RemoteErr)
		}
		return nil
	}

	if err := step("cold"); err != nil {
		return err
	}
	if err := step("warm, always"); err != nil {
		return err
	}
	if err := step("warm, if-not-present", cache.WithPolicy(cache.PullIfNotPresent)); err != nil {
		return err
	}
	// A new release: the tag moves to an image that shares the base layers
	// and differs in one small top layer per platform.
	if err := push(ref, base, 1<<20); err != nil {
		return err
	}
	m.take()
	if err := step("tag moved"); err != nil {
		return err
	}
	srv.Close()
	if err := step("registry down"); err != nil {
		return err
	}
	tw.Flush()
	if staleNote != "" {
		fmt.Printf("(stale: the registry failed with %q)\n", staleNote)
	}

	res, err := resolver.Resolve(ctx, ref, platforms, cache.WithPolicy(cache.PullNever))
	if err != nil {
		return err
	}
	img, err := resolver.Image(ctx, res, "linux/arm64")
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	fmt.Printf("\nlinux/arm64 served from the store with the registry down: %d layers, manifest %s\n",
		len(layers), res.Manifests["linux/arm64"].Hex[:12])
	st := resolver.Stats()
	fmt.Printf("resolver: %d resolves, %d hits, %d revalidated, %d pulled, %d stale, %s fetched\n",
		st.Resolves, st.Hits, st.Revalidated, st.Pulled, st.Stale, formatBytes(int64(st.BytesFetched)))
	rep, err := store.Verify(ctx)
	if err != nil {
		return err
	}
	if len(rep.Bad) > 0 || len(rep.Missing) > 0 {
		return errors.New("store failed verification")
	}
	fmt.Printf("verify: %d blobs, %s, all good\n", rep.Checked, formatBytes(rep.Bytes))
	return nil
}

// makeLayers generates n random layers of size bytes each.
func makeLayers(n int, size int64) ([]v1.Layer, error) {
	var out []v1.Layer
	for range n {
		l, err := random.Layer(size, types.OCIUncompressedLayer)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// push writes a two-platform index to ref: each platform gets the shared
// base layers plus a top layer of its own of topSize bytes.
func push(ref string, base []v1.Layer, topSize int64) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	var idx v1.ImageIndex = empty.Index
	for _, plat := range []string{"linux/amd64", "linux/arm64"} {
		p, _ := v1.ParsePlatform(plat)
		top, err := makeLayers(1, topSize)
		if err != nil {
			return err
		}
		img, err := mutate.AppendLayers(empty.Image, append(append([]v1.Layer{}, base...), top...)...)
		if err != nil {
			return err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = p.OS, p.Architecture
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	return remote.WriteIndex(r, idx)
}

func formatRequests(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for method, n := range m {
		parts = append(parts, fmt.Sprintf("%d %s", n, method))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// shorten keeps the root cause of a long wrapped error.
func shorten(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s) > 80 {
		s = s[i+2:]
	}
	return s
}
