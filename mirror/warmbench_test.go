package mirror_test

// Issue 20, item 4: the warm path against distribution, in one run.
// `buildcache serve` runs as a process of its own so that its CPU time
// can be read from /proc, as docker-registry's is.

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/internal/staticbuild"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
)

var (
	warmBenchMB     = flag.Int("warmbench.mb", 256, "BenchmarkWarmVersusDistribution: size of the warm blob, in MiB")
	warmBenchRounds = flag.Int("warmbench.rounds", 5, "BenchmarkWarmVersusDistribution: interleaved rounds; the table gives medians")
	warmBenchCold   = flag.Bool("warmbench.cold", true, "BenchmarkWarmVersusDistribution: also run the concurrent cold pulls of BenchmarkVersusDistributionProxy")
)

const warmBenchCommand = "go test -run '^$' -bench BenchmarkWarmVersusDistribution -benchtime 1x -timeout 20m ./mirror/"

// warmTarget is a server the warm blob is read from, and the process
// whose CPU time is counted for it.
type warmTarget struct {
	name string
	host string
	pid  int
}

// BenchmarkWarmVersusDistribution measures, in one run, a blob already
// stored (-warmbench.mb, 256 MiB) served by `buildcache serve` (its own
// process, over a localfs store), by docker-registry 2.8 in proxy mode
// and by docker-registry directly: aggregate MB/s and the serving
// process's CPU seconds per GiB served, for 1 and 8 concurrent clients,
// with a client that does not hash (Go's HTTP client, discarding, as curl
// does) and with go-containerregistry's (which verifies the digest);
// medians of -warmbench.rounds interleaved rounds. It also runs the cold
// pulls of BenchmarkVersusDistributionProxy (16 clients, ~200 MB) against
// the same two mirrors. It prints a markdown table; run it with
// -benchtime 1x.
func BenchmarkWarmVersusDistribution(b *testing.B) {
	if testing.Short() {
		b.Skip("hundreds of MB and three servers: not in -short")
	}
	load := loadAverage()
	up := testserver.StartRegistry(b)
	counter := testserver.StartCountingProxy(b, up.Host)
	dist := testserver.StartProxyRegistry(b, "http://"+counter.Host)
	ours := startServe(b, counter.Host)
	rig := &proxyRig{counter: counter, ours: ours.host, dist: dist.Host}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	blobSize := int64(*warmBenchMB) << 20
	warm, err := testimage.RandomIndex([]string{"linux/amd64"}, blobSize, 1)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := testimage.Push(ctx, up.Host+"/team/warm:v1", warm); err != nil {
		b.Fatal(err)
	}
	blob := largestBlob(b, warm)

	var cold struct{ ours, dist, direct coldResult }
	clients := *proxyBenchClients
	if *warmBenchCold {
		big, err := testimage.RandomIndex(platforms, int64(*proxyBenchLayerMB)<<20, *proxyBenchLayers)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := testimage.Push(ctx, up.Host+"/team/big:v1", big); err != nil {
			b.Fatal(err)
		}
		cold.ours = coldPulls(rig, rig.ours, "team/big", "v1", clients)
		cold.dist = coldPulls(rig, rig.dist, "team/big", "v1", clients)
		cold.direct = coldPulls(rig, up.Host, "team/big", "v1", clients)
	}

	targets := []warmTarget{
		{"buildcache serve", ours.host, ours.pid},
		{"distribution 2.8 proxy", dist.Host, dist.PID()},
		{"distribution 2.8 direct", up.Host, up.PID()},
	}
	for _, tg := range targets[:2] {
		if err := fillMirror(rig, tg.host, blob); err != nil {
			b.Fatalf("%s: %v", tg.name, err)
		}
	}

	cases := []warmCase{{"Go HTTP, no hashing", false, 1}, {"Go HTTP, no hashing", false, 8}, {"go-containerregistry", true, 1}, {"go-containerregistry", true, 8}}
	results := map[string][]warmResult{} // by case and target
	for range *warmBenchRounds {
		for _, c := range cases {
			for _, tg := range targets {
				r, err := c.run(tg, blob)
				if err != nil {
					b.Fatalf("%s, %s: %v", tg.name, c, err)
				}
				k := c.String() + "|" + tg.name
				results[k] = append(results[k], r)
			}
		}
	}
	if counter.Counts().BlobGET != 0 {
		b.Errorf("the warm reads asked the upstream: %s", fmtCounts(counter.Counts()))
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "\n`%s` (load average before: %s)\n\n", warmBenchCommand, load)
	fmt.Fprintf(&sb, "| warm %d MiB blob, median of %d | %s |\n|---|---|---|---|\n", *warmBenchMB, *warmBenchRounds,
		strings.Join([]string{targets[0].name, targets[1].name, targets[2].name}, " | "))
	for _, c := range cases {
		direct := median(results[c.String()+"|"+targets[2].name])
		var cells []string
		for _, tg := range targets {
			m := median(results[c.String()+"|"+tg.name])
			cells = append(cells, fmt.Sprintf("%.0f MB/s (%.2f×), %.2f CPU s/GiB", m.mbps, m.mbps/direct.mbps, m.cpuPerGiB))
			if tg.name == targets[0].name {
				b.ReportMetric(m.mbps/direct.mbps, c.metric()+"_ours/direct")
				b.ReportMetric(m.cpuPerGiB, c.metric()+"_ours_cpu_s/GiB")
			}
		}
		fmt.Fprintf(&sb, "| %s | %s |\n", c, strings.Join(cells, " | "))
	}
	if *warmBenchCold {
		for _, r := range []coldResult{cold.ours, cold.dist} {
			if r.err != nil {
				b.Errorf("cold pulls: %v", r.err)
			}
		}
		row := func(r coldResult) string {
			u := r.upstream
			return fmt.Sprintf("%.1fs, upstream blob bytes %.0f MB, max %d GETs of one blob", r.took.Seconds(), float64(u.BlobBytes)/1e6, u.MaxBlobGETs)
		}
		fmt.Fprintf(&sb, "| %d concurrent cold pulls (%d×%d MiB layers, 2 platforms) | %s | %s | %.1fs (already there) |\n",
			clients, *proxyBenchLayers, *proxyBenchLayerMB, row(cold.ours), row(cold.dist), cold.direct.took.Seconds())
	}
	fmt.Fprintln(os.Stdout, sb.String())
}

// warmCase is one kind of client, and how many at once.
type warmCase struct {
	client  string
	hashing bool
	n       int
}

func (c warmCase) String() string { return fmt.Sprintf("%s, %d client(s)", c.client, c.n) }

func (c warmCase) metric() string {
	if c.hashing {
		return fmt.Sprintf("ggcr%d", c.n)
	}
	return fmt.Sprintf("plain%d", c.n)
}

type warmResult struct {
	mbps      float64 // aggregate, MB/s
	cpuPerGiB float64 // CPU seconds of the serving process per GiB served
}

// run reads the blob through tg with c.n concurrent clients.
func (c warmCase) run(tg warmTarget, blob v1.Descriptor) (warmResult, error) {
	cpu0, err := cpuSeconds(tg.pid)
	if err != nil {
		return warmResult{}, err
	}
	errs := make([]error, c.n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range c.n {
		wg.Go(func() {
			if c.hashing {
				errs[i] = readLayerGGCR(tg.host, blob)
			} else {
				errs[i] = readBlobPlain(tg.host, blob)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	cpu1, err := cpuSeconds(tg.pid)
	for _, e := range errs {
		if e != nil {
			return warmResult{}, e
		}
	}
	if err != nil {
		return warmResult{}, err
	}
	bytes := float64(blob.Size) * float64(c.n)
	return warmResult{mbps: bytes / 1e6 / took.Seconds(), cpuPerGiB: (cpu1 - cpu0) / (bytes / (1 << 30))}, nil
}

// readBlobPlain GETs the blob with Go's HTTP client and discards it
// unhashed, as curl -o /dev/null does.
func readBlobPlain(host string, blob v1.Descriptor) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/team/warm/blobs/"+blob.Digest.String(), nil)
	if err != nil {
		return err
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET blob: %s", resp.Status)
	}
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{resp.Body}, buf)
	if err == nil && n != blob.Size {
		err = fmt.Errorf("GET blob: %d bytes, want %d", n, blob.Size)
	}
	return err
}

// readLayerGGCR reads the blob through go-containerregistry's remote,
// which verifies its digest.
func readLayerGGCR(host string, blob v1.Descriptor) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts, done, err := pullOptions(ctx)
	if err != nil {
		return err
	}
	defer done()
	repo, err := name.NewRepository(host + "/team/warm")
	if err != nil {
		return err
	}
	_, err = readBlobs(repo, []v1.Hash{blob.Digest}, opts)
	return err
}

// fillMirror reads the blob through a mirror until the upstream is no
// longer asked for it: distribution's proxy mode stores a blob from a
// download of its own, after the client's.
func fillMirror(rig *proxyRig, host string, blob v1.Descriptor) error {
	for range 30 {
		rig.counter.Reset()
		if err := readBlobPlain(host, blob); err != nil {
			return err
		}
		if rig.counter.Counts().BlobGET == 0 {
			return nil
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("the blob is still fetched from the upstream after 30 reads")
}

// largestBlob is the largest layer of idx's first image.
func largestBlob(tb testing.TB, idx v1.ImageIndex) v1.Descriptor {
	tb.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		tb.Fatal(err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		tb.Fatal(err)
	}
	var best v1.Descriptor
	for _, l := range m.Layers {
		if l.Size > best.Size {
			best = l
		}
	}
	return best
}

func median(rs []warmResult) warmResult {
	rates := make([]float64, len(rs))
	cpus := make([]float64, len(rs))
	for i, r := range rs {
		rates[i], cpus[i] = r.mbps, r.cpuPerGiB
	}
	slices.Sort(rates)
	slices.Sort(cpus)
	return warmResult{mbps: rates[len(rates)/2], cpuPerGiB: cpus[len(cpus)/2]}
}

// cpuSeconds is the user and system time of process pid so far, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s).
func cpuSeconds(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // field 3 onwards
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return (utime + stime) / 100, nil
}

func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(raw))[:3], " ")
}

// servedProcess is `buildcache serve` running in a process of its own.
type servedProcess struct {
	host string
	pid  int
}

// startServe builds cmd/buildcache (or takes $BUILDCACHE_BIN) and runs
// `buildcache serve` over a localfs store in a temp dir, mirroring
// upstream, until the benchmark ends.
func startServe(tb testing.TB, upstream string) servedProcess {
	tb.Helper()
	bin := staticbuild.ForTest(tb) // as it ships: static, no cgo
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	logFile, err := os.Create(filepath.Join(tb.TempDir(), "serve.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "--cache", tb.TempDir(), "serve", "--listen", addr, "--upstream", "bench.test=http://"+upstream)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
		if tb.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			tb.Logf("buildcache serve's log ends:\n%s", tailLines(filterLines(log, "level=INFO"), 30))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return servedProcess{host: addr, pid: cmd.Process.Pid}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			tb.Fatalf("buildcache serve did not answer on %s: %v\n%s", addr, err, tailLines(log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// filterLines drops the lines containing drop.
func filterLines(b []byte, drop string) []byte {
	var out []byte
	for line := range strings.Lines(string(b)) {
		if !strings.Contains(line, drop) {
			out = append(out, line...)
		}
	}
	return out
}

func tailLines(b []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
