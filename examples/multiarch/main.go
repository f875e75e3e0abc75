// Command multiarch builds a small linux/amd64 + linux/arm64 image with
// BuildKit three ways and prints what each cost: the base image pulled by
// BuildKit from the registry, the same base served from our localfs store
// (pinned by digest, handed over as a named context through the session),
// and again from the store with BuildKit's cache imported from the same
// store directory after the daemon's cache was pruned.
//
// It needs a buildkitd: -addr (or $BUILDKIT_HOST) names one; otherwise it
// starts one if buildkitd, runc and root are at hand (bash scripts/test
// builds buildkitd). The arm64 RUN step runs under qemu-user-static. The
// registry is an in-process one on 127.0.0.1; nothing else is contacted.
//
// This is also the benchmark of issue 6: run it a few times and compare
// the rows' times and registry bytes.
//
//	go run ./examples/multiarch [-addr unix:///run/buildkit/buildkitd.sock]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/buildkit/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/buildcache/buildcache/buildkit"
	"github.com/buildcache/buildcache/buildkit/cacheentry"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

var platforms = []string{"linux/amd64", "linux/arm64"}

func main() {
	addr := flag.String("addr", os.Getenv("BUILDKIT_HOST"), "buildkitd address; empty: start one")
	filler := flag.Int("base-mib", 32, "size of the base image's filler layer, MiB")
	flag.Parse()
	log.SetFlags(0)
	if *filler < 1 || *filler > 1024 {
		log.Fatalf("multiarch: -base-mib %d: want 1 to 1024", *filler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if *addr == "" {
		a, stop, err := startBuildkitd()
		if err != nil {
			log.Fatalf("multiarch: no -addr and cannot start buildkitd: %v", err)
		}
		defer stop()
		*addr = a
	}
	// The containerd content store that serves our store to BuildKit logs
	// through logrus; its warnings (no fsverity here) are noise.
	logrus.SetOutput(io.Discard)
	if _, err := run(ctx, os.Stdout, *addr, *filler<<20); err != nil {
		log.Fatalf("multiarch: %v", err)
	}
}

// counter counts what the registry sends: blob and manifest bytes, and GETs.
type counter struct {
	bytes, gets atomic.Int64
}

func (c *counter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			c.gets.Add(1)
		}
		h.ServeHTTP(countingWriter{w, c}, r)
	})
}

type countingWriter struct {
	http.ResponseWriter
	c *counter
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.c.bytes.Add(int64(n))
	return n, err
}

// countingStore counts the bytes BuildKit reads from our store.
type countingStore struct {
	content.Store
	n *atomic.Int64
}

func (s countingStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	ra, err := s.Store.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	return countingReaderAt{ra, s.n}, nil
}

type countingReaderAt struct {
	content.ReaderAt
	n *atomic.Int64
}

func (r countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.ReaderAt.ReadAt(p, off)
	r.n.Add(int64(n))
	return n, err
}

type row struct {
	name          string
	took          time.Duration
	registryBytes int64
	registryGets  int64
	storeBytes    int64
	res           *buildkit.Result
}

func run(ctx context.Context, out io.Writer, addr string, fillerBytes int) ([]row, error) {
	work, err := os.MkdirTemp("", "multiarch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	// The registry the base image comes from, counting what it sends.
	var reg counter
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := httptest.NewUnstartedServer(reg.wrap(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	host := ln.Addr().String()
	image := host + "/base:1"

	fmt.Fprintf(out, "making a %s base image (%s filler + /prog per platform) and pushing it to %s\n",
		strings.Join(platforms, " + "), size(int64(fillerBytes)), image)
	fill, err := fillerLayer(fillerBytes, 42)
	if err != nil {
		return nil, err
	}
	idx, err := baseIndex(platforms, fill)
	if err != nil {
		return nil, err
	}
	ref, err := name.ParseReference(image, name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		return nil, err
	}

	contextDir := filepath.Join(work, "context")
	if err := os.MkdirAll(contextDir, 0o755); err != nil {
		return nil, err
	}
	dockerfile := fmt.Sprintf("FROM %s\nCOPY hello.txt /hello.txt\nRUN [\"/prog\", \"arch\", \"/built-on\"]\n", image)
	for file, body := range map[string]string{"Dockerfile": dockerfile, "hello.txt": "hello\n"} {
		if err := os.WriteFile(filepath.Join(contextDir, file), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}

	c, err := client.New(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	store, err := localfs.Open(filepath.Join(work, "store"))
	if err != nil {
		return nil, err
	}
	defer store.Close()
	resolver, err := registry.NewResolver(store)
	if err != nil {
		return nil, err
	}

	// One option list describes the build, for PinBaseImages and Build.
	common := []buildkit.Option{
		buildkit.WithPlatforms(platforms...),
		// Reproducible output, so that the rows can be compared.
		buildkit.WithBuildArgs(map[string]string{"SOURCE_DATE_EPOCH": "0"}),
	}
	build := func(rowName string, pinned *buildkit.Pinned, caches cacheentry.Entries) (row, error) {
		if err := pruneAll(ctx, c); err != nil {
			return row{}, err
		}
		var served atomic.Int64
		opts := append(slices.Clone(common),
			buildkit.WithOutput(buildkit.OCITarball(filepath.Join(work, "image.tar")).WithAttr("rewrite-timestamp", "true")),
			buildkit.WithCache(caches.Imports, caches.Exports),
			buildkit.WithProgress(io.Discard, "quiet"),
		)
		if pinned != nil {
			for id, cs := range pinned.OCIStores {
				pinned.OCIStores[id] = countingStore{cs, &served}
			}
			opts = append(opts, buildkit.WithPinned(pinned))
		}
		b0, g0 := reg.bytes.Load(), reg.gets.Load()
		start := time.Now()
		res, err := buildkit.Build(ctx, c, contextDir, opts...)
		if err != nil {
			return row{}, fmt.Errorf("%s: %w", rowName, err)
		}
		return row{rowName, time.Since(start), reg.bytes.Load() - b0, reg.gets.Load() - g0, served.Load(), res}, nil
	}

	var rows []row
	r, err := build("base from the registry (BuildKit pulls it)", nil, cacheentry.Entries{})
	if err != nil {
		return nil, err
	}
	rows = append(rows, r)

	// Resolve into the store once: the only registry traffic from here on.
	b0 := reg.bytes.Load()
	start := time.Now()
	pin := func() (*buildkit.Pinned, error) {
		return buildkit.PinBaseImages(ctx, []byte(dockerfile), resolver, store,
			append(slices.Clone(common), buildkit.WithResolveOptions(cache.WithPolicy(cache.PullIfNotPresent)))...)
	}
	pinned, err := pin()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "resolved %s into the store once: %s from the registry in %v\n",
		image, size(reg.bytes.Load()-b0), time.Since(start).Round(time.Millisecond))
	for _, im := range pinned.Images {
		fmt.Fprintf(out, "  %-12s %s (%s)\n", im.Platform, im.Manifest, im.Source)
	}

	exports, err := cacheentry.For(store, cacheentry.WithExportOnly())
	if err != nil {
		return nil, err
	}
	r, err = build("base from our store", pinned, cacheentry.Entries{})
	if err != nil {
		return nil, err
	}
	rows = append(rows, r)

	if pinned, err = pin(); err != nil {
		return nil, err
	}
	r, err = build("base from our store, cache exported to it", pinned, exports)
	if err != nil {
		return nil, err
	}
	rows = append(rows, r)

	if pinned, err = pin(); err != nil {
		return nil, err
	}
	imports, err := cacheentry.For(store, cacheentry.WithImportOnly())
	if err != nil {
		return nil, err
	}
	r, err = build("base and build cache from our store", pinned, imports)
	if err != nil {
		return nil, err
	}
	rows = append(rows, r)

	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "build (daemon cache pruned before each)\ttime\tregistry GETs\tfrom registry\tfrom our store\tsteps cached\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%s\t%s\t%d of %d\t\n", r.name, r.took.Round(time.Millisecond),
			r.registryGets, size(r.registryBytes), size(r.storeBytes), r.res.Cached, r.res.Total)
	}
	tw.Flush()

	last := rows[len(rows)-1].res
	same := "the same in every row"
	for _, r := range rows {
		if !maps.Equal(r.res.Manifests, last.Manifests) {
			same = "NOT the same in every row"
		}
	}
	fmt.Fprintf(out, "\nimage built (%s):\n", same)
	for _, p := range slices.Sorted(maps.Keys(last.Manifests)) {
		fmt.Fprintf(out, "  %-12s %s\n", p, last.Manifests[p])
	}
	fmt.Fprintln(out, "steps answered from the cache imported from the store:")
	for _, s := range last.CachedSteps() {
		fmt.Fprintf(out, "  %s\n", s)
	}
	fmt.Fprintf(out, "our store: %s put by the resolver; BuildKit read %s of base image from it through the session,\n"+
		"and its local cache exporter and importer used the same directory (index.json roots: %d)\n",
		size(int64(store.Stats().BytesIn)), size(rows[1].storeBytes+rows[2].storeBytes+rows[3].storeBytes), roots(ctx, store))
	return rows, nil
}

func roots(ctx context.Context, store *localfs.Store) int {
	idx, err := store.Index(ctx)
	if err != nil {
		return 0
	}
	return len(idx.Manifests)
}

// size prints a byte count in KiB or MiB.
func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// pruneAll empties the daemon's build cache, as `buildctl prune --all`
// does, so that each row starts cold.
func pruneAll(ctx context.Context, c *client.Client) error {
	for range 100 {
		if err := c.Prune(ctx, nil, client.PruneAll); err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		du, err := c.DiskUsage(ctx)
		if err != nil {
			return fmt.Errorf("disk usage: %w", err)
		}
		if len(du) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("prune: the daemon's build cache did not empty")
}
