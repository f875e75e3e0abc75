package mirror_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
)

var (
	proxyBenchLayerMB = flag.Int("proxybench.layermb", 25, "BenchmarkVersusDistributionProxy: size of each of the big image's layers, in MiB")
	proxyBenchLayers  = flag.Int("proxybench.layers", 4, "BenchmarkVersusDistributionProxy: layers per platform of the big image")
	proxyBenchClients = flag.Int("proxybench.clients", 16, "BenchmarkVersusDistributionProxy: concurrent cold pulls")
)

const proxyBenchCommand = "go test -run '^$' -bench BenchmarkVersusDistributionProxy -benchtime 1x -timeout 10m ./mirror/"

// BenchmarkVersusDistributionProxy measures our mirror side by side with
// distribution's proxy mode (Debian's docker-registry 2.8) on one
// upstream registry, in one run, and prints a markdown table:
//
//  1. upstream requests of a cold pull and of 10 warm pulls of one tag;
//  2. the upstream stopped: how many of 10 pulls of the cached tag succeed;
//  3. 16 concurrent cold pulls of a ~200 MB two-platform image: upstream
//     blob bytes and wall time (and the same pulls straight from the
//     upstream, for reference);
//  4. warm blob throughput through each, against straight from the
//     upstream in the same run (best of 3 interleaved rounds).
//
// It runs once, whatever b.N: run it with -benchtime 1x.
func BenchmarkVersusDistributionProxy(b *testing.B) {
	if testing.Short() {
		b.Skip("a ~200 MB image, 16 clients: not in -short")
	}
	up := testserver.StartRegistry(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	small, err := testimage.RandomIndex(platforms, 64<<10, 2)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := testimage.Push(ctx, up.Host+"/team/small:v1", small); err != nil {
		b.Fatal(err)
	}
	layer := int64(*proxyBenchLayerMB) << 20
	big, err := testimage.RandomIndex(platforms, layer, *proxyBenchLayers)
	if err != nil {
		b.Fatal(err)
	}
	pushStart := time.Now()
	if _, err := testimage.Push(ctx, up.Host+"/team/big:v1", big); err != nil {
		b.Fatal(err)
	}
	b.Logf("pushed the big image in %v", time.Since(pushStart))
	blobs, bigBytes := indexBlobs(b, big)

	var t proxyTable
	// Items 1 and 2, on the small image, then the counter is stopped.
	rig := newProxyRig(b, up.Host)
	t.ours.tag = pullTagRepeatedly(rig, rig.ours, "team/small", "v1", 10)
	t.dist.tag = pullTagRepeatedly(rig, rig.dist, "team/small", "v1", 10)
	rig.counter.Stop()
	t.ours.downOK, t.ours.downTook, t.ours.downErr = pullsWhileDown(rig.ours, "team/small", "v1", 10)
	t.dist.downOK, t.dist.downTook, t.dist.downErr = pullsWhileDown(rig.dist, "team/small", "v1", 10)

	// Items 3 and 4, on the big image, through fresh (cold) mirrors.
	rig = newProxyRig(b, up.Host)
	clients := *proxyBenchClients
	t.ours.cold = coldPulls(rig, rig.ours, "team/big", "v1", clients)
	t.dist.cold = coldPulls(rig, rig.dist, "team/big", "v1", clients)
	t.direct.cold = coldPulls(rig, up.Host, "team/big", "v1", clients)
	t.ours.rate, t.dist.rate, t.direct.rate, err = warmRates(rig, up.Host, blobs, bigBytes)
	if err != nil {
		b.Error(err)
	}

	t.bigBytes, t.clients = bigBytes, clients
	t.print()
	b.ReportMetric(t.ours.rate/t.direct.rate, "ours/direct")
	b.ReportMetric(t.dist.rate/t.direct.rate, "dist/direct")
	for _, c := range []*proxyColumn{&t.ours, &t.dist, &t.direct} {
		if c.tag.err != nil || c.cold.err != nil {
			b.Errorf("pulls failed: %v %v", c.tag.err, c.cold.err)
		}
	}
}

// indexBlobs lists every config and layer of idx's images and their
// total size.
func indexBlobs(tb testing.TB, idx v1.ImageIndex) ([]v1.Hash, int64) {
	tb.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		tb.Fatal(err)
	}
	var blobs []v1.Hash
	var total int64
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			tb.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			tb.Fatal(err)
		}
		for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			blobs = append(blobs, desc.Digest)
			total += desc.Size
		}
	}
	return blobs, total
}

// coldResult is item 3 for one target.
type coldResult struct {
	took     time.Duration
	upstream testserver.UpstreamCounts
	err      error
}

// coldPulls runs n concurrent pulls of host/repo:tag and counts what
// reached the upstream through rig's counter.
func coldPulls(rig *proxyRig, host, repo, tag string, n int) coldResult {
	rig.counter.Reset()
	start := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			_, errs[i] = daemonPull(ctx, host, repo, tag)
		})
	}
	wg.Wait()
	r := coldResult{took: time.Since(start), err: errors.Join(errs...)}
	// Distribution stores a cold blob from a second download of its own,
	// which may outlast the clients' pulls: give it a moment to be
	// counted.
	time.Sleep(2 * time.Second)
	r.upstream = rig.counter.Counts()
	return r
}

// warmRates reads every blob once through each target, in 3 interleaved
// rounds, and returns each one's best rate in MB/s.
func warmRates(rig *proxyRig, direct string, blobs []v1.Hash, size int64) (ours, dist, straight float64, err error) {
	targets := []struct {
		host string
		best *float64
	}{{direct, &straight}, {rig.ours, &ours}, {rig.dist, &dist}}
	for range 3 {
		for _, tg := range targets {
			repo, err := name.NewRepository(tg.host + "/team/big")
			if err != nil {
				return 0, 0, 0, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			opts, done, err := pullOptions(ctx)
			if err != nil {
				cancel()
				return 0, 0, 0, err
			}
			start := time.Now()
			n, err := readBlobs(repo, blobs, opts)
			took := time.Since(start)
			done()
			cancel()
			if err != nil {
				return 0, 0, 0, fmt.Errorf("warm read from %s: %w", tg.host, err)
			}
			if n != size {
				return 0, 0, 0, fmt.Errorf("warm read from %s: %d bytes, want %d", tg.host, n, size)
			}
			*tg.best = max(*tg.best, float64(n)/1e6/took.Seconds())
		}
	}
	return ours, dist, straight, nil
}

type proxyColumn struct {
	tag      tagPulls
	downOK   int
	downTook time.Duration
	downErr  error
	cold     coldResult
	rate     float64 // MB/s
}

type proxyTable struct {
	ours, dist, direct proxyColumn
	bigBytes           int64
	clients            int
}

func (t *proxyTable) print() {
	var sb strings.Builder
	row := func(what string, cells ...string) {
		fmt.Fprintf(&sb, "| %s | %s |\n", what, strings.Join(cells, " | "))
	}
	cols := []*proxyColumn{&t.ours, &t.dist}
	each := func(f func(c *proxyColumn) string) []string {
		var out []string
		for _, c := range cols {
			out = append(out, f(c))
		}
		return out
	}
	mb := float64(t.bigBytes) / 1e6
	fmt.Fprintf(&sb, "\n`%s`\n\n", proxyBenchCommand)
	row("", "buildcache mirror", "distribution 2.8 proxy", "direct from upstream")
	row("---", "---", "---", "---")
	row("1. cold pull of a tag (small image): upstream requests",
		append(each(func(c *proxyColumn) string { return fmtCounts(c.tag.cold) }), "–")...)
	row("1. 10 warm pulls of the tag: upstream manifest HEAD / GET",
		append(each(func(c *proxyColumn) string {
			return fmt.Sprintf("%d / %d", c.tag.warm.ManifestHEAD, c.tag.warm.ManifestGET)
		}), "–")...)
	row("1. 10 warm pulls: other upstream requests (blob HEAD+GET, other; /v2/ pings)",
		append(each(func(c *proxyColumn) string {
			w := c.tag.warm
			return fmt.Sprintf("%d; %d", w.BlobHEAD+w.BlobGET+w.Other, w.Ping)
		}), "–")...)
	row("2. upstream stopped: pulls of the cached tag served (time for 10)",
		append(each(func(c *proxyColumn) string {
			return fmt.Sprintf("%d/10 (%.2fs)", c.downOK, c.downTook.Seconds())
		}), "–")...)
	row(fmt.Sprintf("3. %d concurrent cold pulls of %.0f MB, 2 platforms: upstream blob bytes (× image)", t.clients, mb),
		append(each(func(c *proxyColumn) string {
			u := c.cold.upstream
			return fmt.Sprintf("%.0f MB (%.2f×), max %d GETs of one blob", float64(u.BlobBytes)/1e6, float64(u.BlobBytes)/float64(t.bigBytes), u.MaxBlobGETs)
		}), "–")...)
	row("3. wall time of the cold pulls",
		fmt.Sprintf("%.1fs", t.ours.cold.took.Seconds()), fmt.Sprintf("%.1fs", t.dist.cold.took.Seconds()),
		fmt.Sprintf("%.1fs (upstream already has it)", t.direct.cold.took.Seconds()))
	row("4. warm blob throughput, one client, best of 3 (ratio to direct)",
		fmt.Sprintf("%.0f MB/s (%.2f)", t.ours.rate, t.ours.rate/t.direct.rate),
		fmt.Sprintf("%.0f MB/s (%.2f)", t.dist.rate, t.dist.rate/t.direct.rate),
		fmt.Sprintf("%.0f MB/s (1.00)", t.direct.rate))
	for _, c := range []struct {
		who string
		col *proxyColumn
	}{{"ours", &t.ours}, {"distribution", &t.dist}, {"direct", &t.direct}} {
		for _, err := range []error{c.col.tag.err, c.col.downErr, c.col.cold.err} {
			if err != nil {
				fmt.Fprintf(&sb, "\n%s: %v", c.who, err)
			}
		}
	}
	fmt.Fprintln(os.Stdout, sb.String())
}
