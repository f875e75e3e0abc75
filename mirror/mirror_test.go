package mirror_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

var platforms = []string{"linux/amd64", "linux/arm64"}

// newResolver is a resolver over store whose client tries each request
// once, with opts: the tests' upstream failures are deliberate.
func newResolver(tb testing.TB, store cache.LayerCache, opts ...regclient.Option) *registry.Resolver {
	tb.Helper()
	c, err := regclient.New(append([]regclient.Option{regclient.WithRetry(1, time.Millisecond, time.Millisecond)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	res, err := registry.NewResolver(store, registry.WithClient(c))
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// upstream is an in-process registry whose requests are counted and
// which can be stopped (answering 503, as a failing registry does).
type upstream struct {
	srv      *httptest.Server
	requests atomic.Int64
	down     atomic.Bool
}

func newUpstream(t *testing.T, opts ...ggcrregistry.Option) *upstream {
	u := &upstream{}
	reg := ggcrregistry.New(append([]ggcrregistry.Option{ggcrregistry.Logger(log.New(io.Discard, "", 0))}, opts...)...)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" {
			u.requests.Add(1)
		}
		if u.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) host() string { return strings.TrimPrefix(u.srv.URL, "http://") }

type fixture struct {
	up     *upstream
	mirror *httptest.Server
	top    v1.Hash
}

func (f *fixture) host() string { return strings.TrimPrefix(f.mirror.URL, "http://") }

// newFixture pushes a two-platform image to an upstream as team/app:v1
// and serves a mirror of it over a localfs store.
func newFixture(t *testing.T, opts ...mirror.Option) *fixture {
	t.Helper()
	up := newUpstream(t)
	top := testimage.ForTest(t).Push(up.host()+"/team/app:v1", testimage.ForTest(t).RandomIndex(platforms, 64<<10, 2))
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res := newResolver(t, store)
	m, err := mirror.New(res, append([]mirror.Option{mirror.WithUpstream(up.host())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	up.requests.Store(0)
	return &fixture{up: up, mirror: srv, top: top}
}

// pullAll pulls ref through the mirror for every platform with
// go-containerregistry's client and validates each image (every layer
// read and checked against its digest).
func pullAll(t *testing.T, ref string) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatalf("index %s: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Fatalf("%s %s: %v", ref, d.Platform, err)
		}
		n++
	}
	if n != len(platforms) {
		t.Fatalf("pulled %d platforms, want %d", n, len(platforms))
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPullTwoPlatformsThroughMirror(t *testing.T) {
	f := newFixture(t)
	if d := pullAll(t, f.host()+"/team/app:v1"); d != f.top {
		t.Fatalf("pulled %s, want %s", d, f.top)
	}
	if f.up.requests.Load() == 0 {
		t.Fatal("the cold pull made no upstream request")
	}
	// Warm: the tag costs one HEAD; everything else is served by digest
	// from the store.
	f.up.requests.Store(0)
	pullAll(t, f.host()+"/team/app:v1")
	if n := f.up.requests.Load(); n != 1 {
		t.Fatalf("warm pull made %d upstream requests, want 1 (the tag's HEAD)", n)
	}
}

func TestPullWithUpstreamDownServesStale(t *testing.T) {
	f := newFixture(t)
	pullAll(t, f.host()+"/team/app:v1")
	f.up.down.Store(true)
	if d := pullAll(t, f.host()+"/team/app:v1"); d != f.top {
		t.Fatalf("stale pull got %s, want %s", d, f.top)
	}
}

func TestTagOnlyFetchesTopManifest(t *testing.T) {
	f := newFixture(t)
	resp := get(t, f.mirror.URL+"/v2/team/app/manifests/v1", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != f.top.String() {
		t.Fatalf("Docker-Content-Digest %q, want %s", got, f.top)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "index") && !strings.Contains(ct, "manifest.list") {
		t.Fatalf("Content-Type %q is not an index's", ct)
	}
	// Cold, the tag costs one GET of the index (no HEAD first), and no
	// platform manifest or blob is fetched until a client asks for it.
	if n := f.up.requests.Load(); n != 1 {
		t.Fatalf("a cold tag request made %d upstream requests, want 1 (GET of the index only)", n)
	}
}

func TestDigestRequestsMakeNoUpstreamRequest(t *testing.T) {
	f := newFixture(t)
	pullAll(t, f.host()+"/team/app:v1")
	f.up.requests.Store(0)
	ref := f.host() + "/team/app@" + f.top.String()
	r, _ := name.ParseReference(ref)
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	for _, d := range im.Manifests {
		if img, err := idx.Image(d.Digest); err == nil {
			if err := validate.Image(img); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := f.up.requests.Load(); n != 0 {
		t.Fatalf("digest requests made %d upstream requests, want 0", n)
	}
}

func TestErrorCodes(t *testing.T) {
	f := newFixture(t)
	zero := "sha256:" + strings.Repeat("0", 64)
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/team/app/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/team/app/manifests/" + zero, 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/team/app/blobs/" + zero, 404, "BLOB_UNKNOWN"},
		{"GET", "/v2/Team/App/manifests/v1", 400, "NAME_INVALID"},
		{"GET", "/v2/team/../app/blobs/" + zero, 400, "NAME_INVALID"},
		{"GET", "/v2/team/app/blobs/sha256:abc", 400, "DIGEST_INVALID"},
		{"GET", "/v2/team/app/manifests/sha256:" + strings.Repeat("Z", 64), 400, "DIGEST_INVALID"},
		{"PUT", "/v2/team/app/manifests/v1", 405, "UNSUPPORTED"},
		{"POST", "/v2/team/app/blobs/uploads/", 405, "UNSUPPORTED"},
		{"PATCH", "/v2/team/app/blobs/uploads/x", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/team/app/manifests/" + zero, 405, "UNSUPPORTED"},
		{"GET", "/v2/team/app/manifests/v1?ns=ghcr.io", 404, "NAME_UNKNOWN"},
	} {
		req, _ := http.NewRequest(c.method, f.mirror.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Errors []struct{ Code, Message string }
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || err != nil || len(body.Errors) != 1 || body.Errors[0].Code != c.code {
			t.Errorf("%s %s: %d %+v (%v), want %d %s", c.method, c.path, resp.StatusCode, body, err, c.status, c.code)
		}
	}
	if f.up.requests.Load() == 0 {
		t.Error("the unknown tag and digests were not asked upstream")
	}
}

func TestBaseAndHead(t *testing.T) {
	f := newFixture(t)
	resp := get(t, f.mirror.URL+"/v2/", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("/v2/: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest(http.MethodHead, f.mirror.URL+"/v2/team/app/manifests/v1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != f.top.String() || resp.ContentLength <= 0 {
		t.Fatalf("HEAD manifest: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestBlobRange(t *testing.T) {
	f := newFixture(t)
	layer := firstLayer(t, f)
	full := readAll(t, get(t, f.mirror.URL+"/v2/team/app/blobs/"+layer.Digest.String(), nil))
	if int64(len(full)) != layer.Size {
		t.Fatalf("blob is %d bytes, want %d", len(full), layer.Size)
	}
	for _, c := range []struct {
		rng        string
		start, end int64 // inclusive
	}{
		{"bytes=0-9", 0, 9},
		{"bytes=100-", 100, layer.Size - 1},
		{"bytes=-5", layer.Size - 5, layer.Size - 1},
		{fmt.Sprintf("bytes=10-%d", layer.Size+100), 10, layer.Size - 1},
	} {
		resp := get(t, f.mirror.URL+"/v2/team/app/blobs/"+layer.Digest.String(), http.Header{"Range": {c.rng}})
		want := fmt.Sprintf("bytes %d-%d/%d", c.start, c.end, layer.Size)
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want {
			t.Fatalf("%s: %d %q, want 206 %q", c.rng, resp.StatusCode, resp.Header.Get("Content-Range"), want)
		}
		if got := readAll(t, resp); string(got) != string(full[c.start:c.end+1]) {
			t.Fatalf("%s: wrong bytes", c.rng)
		}
	}
	for _, bad := range []string{fmt.Sprintf("bytes=%d-", layer.Size), "bytes=9-3", "bytes=x-y"} {
		resp := get(t, f.mirror.URL+"/v2/team/app/blobs/"+layer.Digest.String(), http.Header{"Range": {bad}})
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("%s: %d, want 416", bad, resp.StatusCode)
		}
	}
}

func TestDockerHubLibraryAndNamespace(t *testing.T) {
	up := newUpstream(t)
	testimage.ForTest(t).Push(up.host()+"/library/busy:1", testimage.ForTest(t).RandomIndex(platforms, 1<<10, 1))
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := registry.NewResolver(store)
	if err != nil {
		t.Fatal(err)
	}
	// The fake "docker.io" is the in-process upstream; a single-component
	// name gets library/ only for Docker Hub's ns.
	m, err := mirror.New(res, mirror.WithUpstreams(map[string]string{"docker.io": up.host()}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	defer srv.Close()
	resp := get(t, srv.URL+"/v2/busy/manifests/1?ns=docker.io", nil)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("busy:1 with ns=docker.io: %d", resp.StatusCode)
	}
	resp = get(t, srv.URL+"/v2/busy/manifests/1", nil) // no default upstream
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("without ns or a default upstream: %d, want 404", resp.StatusCode)
	}
}

func TestSkopeoCopy(t *testing.T) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: skopeo is not installed: %v", err)
		}
		t.Skip("skopeo is not installed (scripts/test installs it: apt-get install -y skopeo)")
	}
	f := newFixture(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, skopeo, "copy", "--src-tls-verify=false", "--all",
		"docker://"+f.host()+"/team/app:v1", "oci:"+dir+":v1")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
}

func get(t *testing.T, url string, h http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// firstLayer is the first layer of the image's first platform, read
// through the mirror.
func firstLayer(t *testing.T, f *fixture) v1.Descriptor {
	t.Helper()
	r, _ := name.ParseReference(f.host() + "/team/app@" + f.top.String())
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	_, layer := parts(t, idx)
	return layer
}

// noStore is an upstream that keeps nothing anywhere.
type noStore struct{ mirror.Upstream }

func (noStore) Store() cache.LayerCache { return nil }

// A mirror serves the store its upstream keeps images in; there is no
// second argument to disagree with it.
func TestNewTakesTheUpstreamsStore(t *testing.T) {
	if _, err := mirror.New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	if _, err := mirror.New(noStore{}); err == nil || !strings.Contains(err.Error(), "no store") {
		t.Errorf("New of an upstream without a store = %v, want an error", err)
	}
}
