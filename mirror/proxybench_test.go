package mirror_test

// Side by side with distribution's proxy mode (issue 13, item 8): one real
// upstream registry behind a counting reverse proxy, with our mirror and
// docker-registry's proxy mode both talking to the counter, and a client
// pulling as a daemon does. TestMirrorVersusDistributionProxy checks the
// claims on a small image (CI); BenchmarkVersusDistributionProxy
// (proxybench_bench_test.go) measures them on a ~200 MB one.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/registry"
)

// proxyRig is our mirror and distribution's proxy mode in front of one
// counting proxy of an upstream registry.
type proxyRig struct {
	counter *testserver.CountingProxy
	ours    string // host:port of our mirror
	dist    string // host:port of docker-registry in proxy mode
}

func newProxyRig(tb testing.TB, upstream string) *proxyRig {
	tb.Helper()
	counter := testserver.StartCountingProxy(tb, upstream)
	store, err := localfs.Open(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	res, err := registry.NewResolver(store)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := mirror.New(res, mirror.WithUpstream(counter.Host))
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(m)
	tb.Cleanup(srv.Close)
	dist := testserver.StartProxyRegistry(tb, "http://"+counter.Host)
	return &proxyRig{counter: counter, ours: strings.TrimPrefix(srv.URL, "http://"), dist: dist.Host}
}

// pullOptions are a client's: go-containerregistry's remote with a
// bounded transport and no retries (a failure is a failure, at once).
func pullOptions(ctx context.Context) ([]remote.Option, func(), error) {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   8,
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr), remote.WithRetryBackoff(remote.Backoff{Steps: 1})}
	p, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, nil, err
	}
	return append(opts, remote.Reuse(p)), tr.CloseIdleConnections, nil
}

// daemonPull pulls host/repo:tag as a daemon does: GET the tag's
// manifest, then each platform manifest and every blob (configs and
// layers) by digest, each body read whole and verified by the client.
// It returns the blob bytes read.
func daemonPull(ctx context.Context, host, repo, tag string) (int64, error) {
	opts, done, err := pullOptions(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	ref, err := name.ParseReference(host + "/" + repo + ":" + tag)
	if err != nil {
		return 0, err
	}
	top, err := remote.Get(ref, opts...)
	if err != nil {
		return 0, err
	}
	raws := [][]byte{top.Manifest}
	if top.MediaType.IsIndex() {
		im, err := v1.ParseIndexManifest(bytes.NewReader(top.Manifest))
		if err != nil {
			return 0, err
		}
		raws = raws[:0]
		for _, d := range im.Manifests {
			m, err := remote.Get(ref.Context().Digest(d.Digest.String()), opts...)
			if err != nil {
				return 0, err
			}
			raws = append(raws, m.Manifest)
		}
	}
	var blobs []v1.Hash
	for _, raw := range raws {
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return 0, err
		}
		blobs = append(blobs, m.Config.Digest)
		for _, l := range m.Layers {
			blobs = append(blobs, l.Digest)
		}
	}
	return readBlobs(ref.Context(), blobs, opts)
}

// readBlobs reads each blob of repo whole, in turn, through the client.
func readBlobs(repo name.Repository, blobs []v1.Hash, opts []remote.Option) (int64, error) {
	var total int64
	for _, d := range blobs {
		l, err := remote.Layer(repo.Digest(d.String()), opts...)
		if err != nil {
			return total, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return total, fmt.Errorf("blob %s: %w", d, err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		total += n
		if err != nil {
			return total, fmt.Errorf("blob %s: %w", d, err)
		}
	}
	return total, nil
}

// tagPulls is item 1 for one mirror: the upstream requests of a cold
// pull, then of n warm pulls of the same tag.
type tagPulls struct {
	cold, warm testserver.UpstreamCounts
	err        error
}

func pullTagRepeatedly(rig *proxyRig, host, repo, tag string, n int) tagPulls {
	var r tagPulls
	rig.counter.Reset()
	pull := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := daemonPull(ctx, host, repo, tag)
		return err
	}
	if r.err = pull(); r.err != nil {
		return r
	}
	r.cold = rig.counter.Counts()
	rig.counter.Reset()
	for range n {
		if r.err = pull(); r.err != nil {
			break
		}
	}
	r.warm = rig.counter.Counts()
	return r
}

// pullsWhileDown is item 2 for one mirror, the upstream stopped: how many
// of n pulls of a cached tag succeed, the time the
// n pulls took, and the first failure.
func pullsWhileDown(host, repo, tag string, n int) (ok int, took time.Duration, first error) {
	start := time.Now()
	defer func() { took = time.Since(start) }()
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := daemonPull(ctx, host, repo, tag)
		cancel()
		if err == nil {
			ok++
		} else if first == nil {
			first = err
		}
	}
	return ok, 0, first
}

func fmtCounts(c testserver.UpstreamCounts) string {
	return fmt.Sprintf("manifest HEAD %d, manifest GET %d, blob HEAD %d, blob GET %d, other %d, /v2/ %d",
		c.ManifestHEAD, c.ManifestGET, c.BlobHEAD, c.BlobGET, c.Other, c.Ping)
}

// TestMirrorVersusDistributionProxy checks, on a small two-platform image
// behind a real registry, that once warm our mirror asks the upstream one
// manifest HEAD per pull of a tag and nothing else, and serves every pull
// with the upstream stopped. Distribution's figures are only logged.
func TestMirrorVersusDistributionProxy(t *testing.T) {
	up := testserver.StartRegistry(t)
	idx := testimage.ForTest(t).RandomIndex(platforms, 64<<10, 2)
	testimage.ForTest(t).Push(up.Host+"/team/app:v1", idx)
	rig := newProxyRig(t, up.Host)
	const pulls = 10

	start := time.Now()
	ours := pullTagRepeatedly(rig, rig.ours, "team/app", "v1", pulls)
	if ours.err != nil {
		t.Fatalf("pull through our mirror: %v", ours.err)
	}
	t.Logf("ours: %d pulls in %v", pulls+1, time.Since(start))
	start = time.Now()
	dist := pullTagRepeatedly(rig, rig.dist, "team/app", "v1", pulls)
	t.Logf("distribution: %d pulls in %v", pulls+1, time.Since(start))
	t.Logf("ours, cold pull: %s", fmtCounts(ours.cold))
	t.Logf("ours, %d warm pulls: %s", pulls, fmtCounts(ours.warm))
	t.Logf("distribution, cold pull: %s (err %v)", fmtCounts(dist.cold), dist.err)
	t.Logf("distribution, %d warm pulls: %s", pulls, fmtCounts(dist.warm))
	if w := ours.warm; w.ManifestGET != 0 || w.BlobHEAD != 0 || w.BlobGET != 0 || w.Other != 0 || w.ManifestHEAD != pulls {
		t.Errorf("our %d warm pulls asked the upstream %s; want %d manifest HEADs and nothing else", pulls, fmtCounts(w), pulls)
	}

	rig.counter.Stop()
	ok, took, err := pullsWhileDown(rig.ours, "team/app", "v1", pulls)
	dok, dtook, derr := pullsWhileDown(rig.dist, "team/app", "v1", pulls)
	t.Logf("upstream stopped: ours served %d/%d in %v, distribution %d/%d in %v (first error: %v)", ok, pulls, took, dok, pulls, dtook, derr)
	if ok != pulls {
		t.Errorf("upstream stopped: our mirror served %d of %d pulls; first error: %v", ok, pulls, err)
	}
}
