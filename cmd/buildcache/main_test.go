package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/internal/testimage"
)

// testImage is a two-platform image pushed to an in-process registry.
type testImage struct {
	srv  *httptest.Server
	ref  string         // "127.0.0.1:port/app:v1"
	idx  v1.ImageIndex  // what was pushed
	amd  v1.Image       // its linux/amd64 image
	want map[string]any // digest and manifests, as resolve --json prints them
}

// blobs is how many blobs the image stores for both platforms: the index,
// and per platform a manifest, a config and two layers.
const testImageBlobs = 1 + 2*(1+1+2)

func pushTestImage(t *testing.T) *testImage {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ti := &testImage{srv: srv, ref: strings.TrimPrefix(srv.URL, "http://") + "/app:v1"}
	img := testimage.ForTest(t)
	idx := img.RandomIndex([]string{"linux/amd64", "linux/arm64"}, 1024, 2)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	manifests := map[string]any{}
	for _, desc := range im.Manifests {
		manifests[desc.Platform.String()] = desc.Digest.String()
		if desc.Platform.String() == "linux/amd64" {
			if ti.amd, err = idx.Image(desc.Digest); err != nil {
				t.Fatal(err)
			}
		}
	}
	d := img.Push(ti.ref, idx)
	ti.idx = idx
	ti.want = map[string]any{"digest": d.String(), "manifests": manifests}
	return ti
}

// cli runs the command in-process.
func cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), args, &out, &errb)
	return out.String(), errb.String(), code
}

// cliJSON runs the command with --json, checks its exit code and decodes
// its output.
func cliJSON(t *testing.T, wantCode int, args ...string) map[string]any {
	t.Helper()
	stdout, stderr, code := cli(t, append([]string{"--json"}, args...)...)
	if code != wantCode {
		t.Fatalf("buildcache %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, stdout, stderr)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("buildcache --json %s printed no JSON document: %v\n%s", strings.Join(args, " "), err, stdout)
	}
	return v
}

// image returns the i-th entry of a {"images": [...]} document.
func image(t *testing.T, doc map[string]any, i int) map[string]any {
	t.Helper()
	images, _ := doc["images"].([]any)
	if len(images) <= i {
		t.Fatalf("document has %d images, want more than %d: %v", len(images), i, doc)
	}
	return images[i].(map[string]any)
}

const bothPlatforms = "--platform=linux/amd64,linux/arm64"

func blobFiles(t *testing.T, dir string) (n int, size int64) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n++
		size += info.Size()
	}
	return n, size
}

func TestWarmPullsThenRevalidates(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()

	stdout, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref)
	if code != 0 {
		t.Fatalf("cold warm: exit %d\n%s", code, stderr)
	}
	want := ti.ref + " " + ti.want["digest"].(string) + " pulled: 2 platforms, 9 blobs,"
	if !strings.HasPrefix(stdout, want) {
		t.Errorf("cold warm printed %q, want it to start with %q", stdout, want)
	}
	// stderr is not a terminal here: progress comes as log lines.
	if !strings.Contains(stderr, "pulling "+ti.ref+": ") || !strings.Contains(stderr, "6/6 blobs") { // 2 configs, 4 layers
		t.Errorf("cold warm logged no progress lines on stderr:\n%s", stderr)
	}
	if n, _ := blobFiles(t, dir); n != testImageBlobs {
		t.Errorf("the cache holds %d blobs after warm, want %d", n, testImageBlobs)
	}

	again := image(t, cliJSON(t, 0, "--cache", dir, "warm", bothPlatforms, ti.ref), 0)
	if again["source"] != "revalidated" || again["fetched_blobs"] != 0.0 || again["blobs"] != float64(testImageBlobs) {
		t.Errorf("second warm = %v, want source revalidated, fetched_blobs 0, blobs %d", again, testImageBlobs)
	}
	if again["digest"] != ti.want["digest"] {
		t.Errorf("second warm digest %v, want %v", again["digest"], ti.want["digest"])
	}

	// if-not-present answers from the cache with no request at all.
	hit := image(t, cliJSON(t, 0, "--cache", dir, "warm", "--policy=if-not-present", bothPlatforms, ti.ref), 0)
	if hit["source"] != "hit" {
		t.Errorf("warm --policy if-not-present source = %v, want hit", hit["source"])
	}
}

func TestResolveJSONHasDigests(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()

	got := image(t, cliJSON(t, 0, "--cache", dir, "resolve", "--platform", "linux/amd64", "--platform", "linux/arm64", ti.ref), 0)
	want := map[string]any{"ref": ti.ref, "source": "pulled", "digest": ti.want["digest"], "manifests": ti.want["manifests"]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resolve --json (-want +got):\n%s", diff)
	}

	// The text form: the image line, then one line per platform.
	stdout, stderr, code := cli(t, "--cache", dir, "resolve", bothPlatforms, ti.ref)
	if code != 0 {
		t.Fatalf("resolve: exit %d\n%s", code, stderr)
	}
	m := ti.want["manifests"].(map[string]any)
	wantText := ti.ref + " " + ti.want["digest"].(string) + " revalidated\n" +
		"  linux/amd64 " + m["linux/amd64"].(string) + "\n" +
		"  linux/arm64 " + m["linux/arm64"].(string) + "\n"
	if stdout != wantText {
		t.Errorf("resolve printed\n%s\nwant\n%s", stdout, wantText)
	}
	if stderr != "" {
		t.Errorf("resolve wrote to stderr when it is not a terminal: %q", stderr)
	}
}

func TestPolicyNeverUncachedExits3(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()

	doc := cliJSON(t, exitNotCached, "--cache", dir, "warm", "--policy", "never", ti.ref)
	img := image(t, doc, 0)
	if img["exit_code"] != float64(exitNotCached) || !strings.Contains(img["error"].(string), "offline") {
		t.Errorf("warm --policy never of an uncached image = %v, want exit_code 3 and an offline error", img)
	}
	// Several images: the others still run, the first failure decides the code.
	_, stderr, code := cli(t, "--cache", dir, "resolve", "--policy=never", ti.ref, "127.0.0.1:1/other:v1")
	if code != exitNotCached || strings.Count(stderr, "offline") != 2 {
		t.Errorf("resolve --policy never of two uncached images: exit %d, stderr %q; want 3 and two errors", code, stderr)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"--no-such-flag", "ls"},
		{"warm"},
		{"warm", "UPPER/case:v1"},
		{"resolve", "localhost:5000/app:v1", "bad::ref"},
		{"warm", "--policy", "sometimes", "localhost:5000/app:v1"},
		{"warm", "--platform", "linux", "localhost:5000/app:v1"},
		{"gc", "--max-bytes", "10XB"},
		{"gc", "--max-bytes", "-1GiB"},
		{"gc", "--ttl", "-1h"},
		{"gc", "--prune-older-than", "soon"},
		{"ls", "extra"},
		{"verify", "--remove=maybe"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			_, stderr, code := cli(t, append([]string{"--cache", dir}, args...)...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if !strings.HasPrefix(stderr, "buildcache: ") && !strings.Contains(stderr, "Usage:") {
				t.Errorf("stderr does not say what is wrong: %q", stderr)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("a usage error created the cache directory")
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		doc := cliJSON(t, exitUsage, "--cache", t.TempDir(), "warm", "UPPER/case:v1")
		if doc["exit_code"] != float64(exitUsage) || !strings.Contains(doc["error"].(string), "UPPER/case:v1") {
			t.Errorf("--json usage error printed %v", doc)
		}
	})
}

func TestLsShowsImage(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}

	stdout, _, code := cli(t, "--cache", dir, "ls")
	if code != 0 {
		t.Fatalf("ls: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "REF") {
		t.Fatalf("ls printed\n%s\nwant a header and one image", stdout)
	}
	digest := ti.want["digest"].(string)
	for _, want := range []string{ti.ref, shortDigest(digest), "linux/amd64,linux/arm64", " 9 "} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("ls line %q does not show %q", lines[1], want)
		}
	}

	img := image(t, cliJSON(t, 0, "--cache", dir, "ls"), 0)
	_, size := blobFiles(t, dir)
	if img["ref"] != ti.ref || img["digest"] != digest || img["blobs"] != float64(testImageBlobs) || img["bytes"] != float64(size) {
		t.Errorf("ls --json = %v, want ref %s, digest %s, %d blobs, %d bytes", img, ti.ref, digest, testImageBlobs, size)
	}
	if img["resolved_at"] == nil {
		t.Errorf("ls --json has no resolved_at: %v", img)
	}
}

func TestVerifyFindsAndRemovesBadBlob(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}
	if _, _, code := cli(t, "--cache", dir, "verify"); code != 0 {
		t.Fatalf("verify of a fresh cache: exit %d", code)
	}

	layers, _ := ti.amd.Layers()
	bad, _ := layers[0].Digest()
	p := filepath.Join(dir, "blobs", "sha256", bad.Hex)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}

	stdout, stderr, code := cli(t, "--cache", dir, "verify")
	if code != exitCorrupt || !strings.Contains(stdout, "bad "+bad.String()) || !strings.Contains(stderr, "--remove") {
		t.Fatalf("verify with a flipped byte: exit %d, stdout %q, stderr %q; want 4 naming %s", code, stdout, stderr, bad)
	}
	if doc := cliJSON(t, exitCorrupt, "--cache", dir, "verify"); len(doc["bad"].([]any)) != 1 || doc["removed"] != 0.0 {
		t.Errorf("verify --json = %v, want one bad blob, none removed", doc)
	}

	doc := cliJSON(t, 0, "--cache", dir, "verify", "--remove")
	if doc["removed"] != 1.0 {
		t.Errorf("verify --remove = %v, want one removed", doc)
	}
	doc = cliJSON(t, 0, "--cache", dir, "verify")
	if len(doc["bad"].([]any)) != 0 || !slices.Contains(doc["missing"].([]any), any(bad.String())) {
		t.Errorf("verify after --remove = %v, want no bad blob and %s missing", doc, bad)
	}
	if _, err := os.Stat(p); err == nil {
		t.Errorf("verify --remove left %s", p)
	}

	// The image is incomplete now: offline it is not cached, online warm
	// pulls the blob again.
	cliJSON(t, exitNotCached, "--cache", dir, "warm", "--policy=never", bothPlatforms, ti.ref)
	img := image(t, cliJSON(t, 0, "--cache", dir, "warm", bothPlatforms, ti.ref), 0)
	if img["source"] != "pulled" || img["blobs"] != float64(testImageBlobs) {
		t.Errorf("warm after verify --remove = %v, want pulled and %d blobs", img, testImageBlobs)
	}
	if doc := cliJSON(t, 0, "--cache", dir, "verify"); len(doc["missing"].([]any)) != 0 {
		t.Errorf("verify after the repair = %v, want nothing missing", doc)
	}
}

func TestGCPrunesThenRemovesBlobs(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}

	// A recorded image's blobs are never collected.
	doc := cliJSON(t, 0, "--cache", dir, "gc", "--ttl", "0", "--max-bytes", "0")
	if doc["removed"] != 0.0 || doc["reachable"] != float64(testImageBlobs) {
		t.Errorf("gc of a recorded image = %v, want nothing removed, %d reachable", doc, testImageBlobs)
	}

	// Pruning drops the record; without --ttl or --max-bytes nothing else goes.
	stdout, stderr, code := cli(t, "--cache", dir, "gc", "--prune-older-than", "0s")
	if code != 0 || !strings.Contains(stdout, "pruned "+ti.ref) || !strings.Contains(stdout, "removed 0 blobs") || !strings.Contains(stderr, "--ttl or --max-bytes") {
		t.Errorf("gc --prune-older-than 0s: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if img := cliJSON(t, 0, "--cache", dir, "ls"); len(img["images"].([]any)) != 0 {
		t.Errorf("ls after pruning = %v, want no images", img)
	}

	doc = cliJSON(t, 0, "--cache", dir, "gc", "--ttl", "0s")
	if doc["removed"] != float64(testImageBlobs) || doc["kept"] != 0.0 || len(doc["pruned"].([]any)) != 0 {
		t.Errorf("gc --ttl 0s after pruning = %v, want %d removed, none kept", doc, testImageBlobs)
	}
	if n, _ := blobFiles(t, dir); n != 0 {
		t.Errorf("%d blobs left after gc", n)
	}
}

func TestGCKeepsRecentImages(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}
	doc := cliJSON(t, 0, "--cache", dir, "gc", "--prune-older-than", "7d", "--ttl", "1.5d", "--max-bytes", "1GiB")
	if len(doc["pruned"].([]any)) != 0 || doc["removed"] != 0.0 || doc["kept"] != float64(testImageBlobs) {
		t.Errorf("gc with generous limits = %v, want nothing pruned or removed", doc)
	}
}

func TestStatsJSON(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	if doc := cliJSON(t, 0, "--cache", dir, "stats"); doc["blobs"] != 0.0 || doc["images"] != 0.0 {
		t.Errorf("stats of an empty cache = %v", doc)
	}
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}
	doc := cliJSON(t, 0, "--cache", dir, "stats")
	_, size := blobFiles(t, dir)
	abs, _ := filepath.Abs(dir)
	if doc["dir"] != abs || doc["blobs"] != float64(testImageBlobs) || doc["bytes"] != float64(size) || doc["images"] != 1.0 {
		t.Errorf("stats --json = %v, want dir %s, %d blobs, %d bytes, 1 image", doc, abs, testImageBlobs, size)
	}
	c, ok := doc["counters"].(map[string]any)
	if !ok {
		t.Fatalf("stats --json has no counters: %v", doc)
	}
	for _, k := range []string{"hits", "misses", "bytes_in", "bytes_out", "evictions", "corruptions", "errors", "hit_ratio"} {
		if _, ok := c[k]; !ok {
			t.Errorf("stats --json counters lack %q: %v", k, c)
		}
	}
	stdout, _, code := cli(t, "--cache", dir, "stats")
	if code != 0 || !strings.Contains(stdout, "blobs") || !strings.Contains(stdout, "images") {
		t.Errorf("stats: exit %d\n%s", code, stdout)
	}
}

func TestRegistryDown(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}
	ti.srv.Close() // the registry goes away (after a few retries: ~1.4s)

	stdout, stderr, code := cli(t, "--json", "--cache", dir, "resolve", bothPlatforms, ti.ref)
	if code != 0 {
		t.Fatalf("resolve with the registry down: exit %d, want 0 (stale)\n%s", code, stderr)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatal(err)
	}
	img := image(t, doc, 0)
	if img["source"] != "stale" || img["digest"] != ti.want["digest"] || img["remote_error"] == nil {
		t.Errorf("stale resolve = %v", img)
	}
	if !strings.HasPrefix(stderr, "warning: "+ti.ref) || !strings.Contains(stderr, "stale") || !strings.Contains(stderr, "connection refused") {
		t.Errorf("stale resolve warned %q, want a warning naming the registry's error", stderr)
	}

	// An image that is not cached cannot be served stale: offline, exit 3.
	other := strings.TrimSuffix(ti.ref, "app:v1") + "other:v1"
	if _, stderr, code := cli(t, "--cache", dir, "warm", other); code != exitNotCached {
		t.Errorf("warm of an uncached image with the registry down: exit %d, want 3\n%s", code, stderr)
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "500MB", want: 500_000_000},
		{in: "500mb", want: 500_000_000},
		{in: "10GiB", want: 10 << 30},
		{in: "10gib", want: 10 << 30},
		{in: "1.5 GiB", want: 3 << 29},
		{in: "2TB", want: 2_000_000_000_000},
		{in: "64KiB", want: 64 << 10},
		{in: "1k", want: 1 << 10}, // K, M, G, T without "B" are binary, as in buildcache.Open's URLs
		{in: "10G", want: 10 << 30},
		{in: "512b", want: 512},
		{in: " 7 MiB ", want: 7 << 20},
		{in: "8388608TiB", bad: true}, // 2^63: one past the largest int64
		{in: "", bad: true},
		{in: "-1GiB", bad: true},
		{in: "10XB", bad: true},
		{in: "GiB", bad: true},
		{in: "ten", bad: true},
	} {
		var got int64
		err := sizeValue{&got}.Set(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("size %q = %d, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("size %q = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // as time.Duration prints it; "" = error
	}{
		{"0", "0s"},
		{"0s", "0s"},
		{"90m", "1h30m0s"},
		{"1.5h", "1h30m0s"},
		{"7d", "168h0m0s"},
		{"1.5d", "36h0m0s"},
		{"36h", "36h0m0s"},
		{"500ms", "500ms"},
		{"-1h", ""},
		{"7", ""},
		{"soon", ""},
		{"", ""},
		{"7y", ""},
	} {
		var got time.Duration
		err := durationValue{&got}.Set(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("duration %q = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("duration %q = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestDefaultCacheDir(t *testing.T) {
	home := func() (string, error) { return "/home/u", nil }
	noHome := func() (string, error) { return "", os.ErrNotExist }
	env := func(xdg string) func(string) string {
		return func(k string) string {
			if k == "XDG_CACHE_HOME" {
				return xdg
			}
			return ""
		}
	}
	for _, tt := range []struct {
		xdg  string
		home func() (string, error)
		want string
	}{
		{"/xdg", home, "/xdg/buildcache"},
		{"", home, "/home/u/.cache/buildcache"},
		{"relative/xdg", home, "/home/u/.cache/buildcache"}, // the XDG spec says to ignore it
		{"", noHome, ""},
		{"/xdg", noHome, "/xdg/buildcache"},
	} {
		if got := defaultCacheDir(env(tt.xdg), tt.home); got != tt.want {
			t.Errorf("defaultCacheDir(XDG_CACHE_HOME=%q) = %q, want %q", tt.xdg, got, tt.want)
		}
	}
}
