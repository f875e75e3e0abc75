// Command metrics serves buildcache's counters to Prometheus while it
// resolves a base image, with no network beyond loopback. It starts an
// in-process registry on 127.0.0.1 with a generated linux/amd64 +
// linux/arm64 image, serves /metrics on a random loopback port, and
// resolves the image cold, warm (PullAlways: one HEAD) and warm
// (PullIfNotPresent: no request) through a resolver over a tiered store:
// a localfs near tier in front of an in-memory "shared" far tier. It reads
// every blob back, then again through a second runner's empty near tier
// over the same far tier; it reads the digest through a memory
// ResourceCache and a Kubernetes object through k8sclient (on an
// API-server double). Then it scrapes its own /metrics once, prints the
// buildcache_ series and exits.
//
//	go run ./examples/metrics [-cache DIR] [-listen 127.0.0.1:0]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/dynamic"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/metrics"
	"github.com/buildcache/buildcache/metrics/k8smetrics"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/tier"
)

func main() {
	cacheDir := flag.String("cache", "", "near tier directory (default: a temporary one, removed at exit)")
	listen := flag.String("listen", "127.0.0.1:0", "address to serve /metrics on")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, *cacheDir, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "metrics:", err)
		os.Exit(1)
	}
}

// serve runs h on a listener for addr until the returned stop is called.
func serve(addr string, h http.Handler) (url string, stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	return "http://" + l.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

func run(ctx context.Context, out io.Writer, cacheDir, listen string) error {
	if cacheDir == "" {
		tmp, err := os.MkdirTemp("", "buildcache-metrics-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		cacheDir = tmp
	}

	// An in-process registry on loopback, with one two-platform image.
	regURL, stopRegistry, err := serve("127.0.0.1:0", ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	if err != nil {
		return err
	}
	defer stopRegistry()
	ref := strings.TrimPrefix(regURL, "http://") + "/flink:1.14.5-scala_2.11"
	var images []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(256<<10, 3) // three layers of 256 KiB
		if err != nil {
			return err
		}
		images = append(images, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	tag, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	if err := remote.WriteIndex(tag, mutate.AppendManifests(empty.Index, images...), remote.WithContext(ctx)); err != nil {
		return err
	}

	// The store: a local disk in front of a shared tier (here in memory;
	// an s3.Cache or ocirepo.Cache in a CI fleet).
	near, err := localfs.Open(cacheDir)
	if err != nil {
		return err
	}
	far, err := memory.NewLayerCache()
	if err != nil {
		return err
	}
	store, err := tier.New(near, far)
	if err != nil {
		return err
	}
	defer store.Close()
	resolver, err := registry.NewResolver(store)
	if err != nil {
		return err
	}
	// Digests a program looks up again and again, kept for a minute.
	digests, err := memory.New[string, string](memory.WithTTL(time.Minute))
	if err != nil {
		return err
	}
	defer digests.Close()
	// A Kubernetes client reading a rarely-changing object.
	api := k8stest.NewServer()
	defer api.Close()
	if _, err := api.Create(k8stest.PackageRepositoriesGVR, k8stest.NewPackageRepository("glasskube", "https://packages.dl.glasskube.dev/packages")); err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(api.Config())
	if err != nil {
		return err
	}
	kube, err := k8sclient.New(dyn)
	if err != nil {
		return err
	}
	defer kube.Close()

	// The program's own registry of collectors, served on loopback.
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		metrics.NewResolverCollector(resolver),
		metrics.NewTierCollector("runner-1", store),
		metrics.NewResourceCacheCollector("digests", digests),
		k8smetrics.NewClientCollector("operator", kube),
	)
	metricsURL, stopMetrics, err := serve(listen, promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	if err != nil {
		return err
	}
	defer stopMetrics()
	fmt.Fprintf(out, "registry %s, /metrics on %s/metrics\n", regURL, metricsURL)

	platforms := cache.WithPlatforms("linux/amd64", "linux/arm64")
	for _, step := range []struct {
		label  string
		policy cache.PullPolicy
	}{{"cold", cache.PullAlways}, {"warm, always", cache.PullAlways}, {"warm, if-not-present", cache.PullIfNotPresent}} {
		res, err := resolver.Resolve(ctx, ref, platforms, cache.WithPolicy(step.policy))
		if err != nil {
			return fmt.Errorf("%s: %w", step.label, err)
		}
		fmt.Fprintf(out, "resolve %-21s %-12s %s\n", step.label, res.Source, res.Digest.Hex[:12])
	}
	// Read every blob back from the store, as a build would.
	var blobs []v1.Hash
	if err := store.Walk(ctx, func(d v1.Hash, _ int64) error { blobs = append(blobs, d); return nil }); err != nil {
		return err
	}
	for _, d := range blobs {
		if err := readBlob(ctx, store, d); err != nil {
			return err
		}
	}
	// A second CI runner with an empty disk over the same shared tier: its
	// reads are served by the far tier and fill its near one.
	dir2, err := os.MkdirTemp("", "buildcache-metrics-runner-2-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir2)
	near2, err := localfs.Open(dir2)
	if err != nil {
		return err
	}
	store2, err := tier.New(near2, far)
	if err != nil {
		return err
	}
	defer store2.Close()
	reg.MustRegister(metrics.NewTierCollector("runner-2", store2))
	for _, d := range blobs {
		if err := readBlob(ctx, store2, d); err != nil {
			return err
		}
	}
	for range 5 {
		if _, err := digests.Get(ctx, ref, func(ctx context.Context) (string, error) {
			res, err := resolver.Resolve(ctx, ref, platforms, cache.WithPolicy(cache.PullIfNotPresent))
			if err != nil {
				return "", err
			}
			return res.Digest.String(), nil
		}); err != nil {
			return err
		}
	}
	for range 10 {
		if _, err := kube.Get(ctx, k8stest.PackageRepositoriesGVR, "", "glasskube"); err != nil {
			return err
		}
	}

	// One scrape, as Prometheus would make it.
	return scrape(ctx, out, metricsURL+"/metrics")
}

func readBlob(ctx context.Context, c cache.LayerCache, d v1.Hash) error {
	rc, err := c.Get(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// scrape prints the buildcache_ series (and their types) that url serves.
func scrape(ctx context.Context, out io.Writer, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scrape: %s", resp.Status)
	}
	fmt.Fprintf(out, "\nGET %s:\n", url)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	families := 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# TYPE buildcache_"):
			families++
			fmt.Fprintln(out, line)
		case strings.HasPrefix(line, "buildcache_"):
			fmt.Fprintln(out, "  "+line)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if families == 0 {
		return errors.New("scrape: no buildcache_ families")
	}
	fmt.Fprintf(out, "%d buildcache_ families\n", families)
	return nil
}
