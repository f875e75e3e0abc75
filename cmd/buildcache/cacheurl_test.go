package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/buildcache/buildcache/internal/testserver"
)

// tierURL is a tier:// URL of a local directory in front of far.
func tierURL(dir, far string) string {
	return "tier://?near=" + url.QueryEscape("file://"+dir) + "&far=" + url.QueryEscape(far)
}

// TestWarmThenLsThroughATier: warm through a tier whose near tier is a
// directory, and ls in a later invocation finds the image there; gc and
// verify work on the near tier and say so.
func TestWarmThenLsThroughATier(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	tier := tierURL(dir, "mem://")

	doc := cliJSON(t, 0, "--cache", tier, "warm", bothPlatforms, ti.ref)
	if w := image(t, doc, 0); w["source"] != "pulled" || w["digest"] != ti.want["digest"] {
		t.Fatalf("warm through a tier = %v, want pulled %v", w, ti.want["digest"])
	}
	doc = cliJSON(t, 0, "--cache", tier, "ls")
	if img := image(t, doc, 0); img["ref"] != ti.ref || img["blobs"] != float64(testImageBlobs) {
		t.Errorf("ls through the tier = %v, want %s with %d blobs", img, ti.ref, testImageBlobs)
	}
	// The near tier is the directory: a plain --cache DIR sees the same.
	if img := image(t, cliJSON(t, 0, "--cache", dir, "ls"), 0); img["ref"] != ti.ref {
		t.Errorf("ls of the near directory = %v, want %s", img, ti.ref)
	}
	for _, cmd := range []string{"gc", "verify"} {
		stdout, stderr, code := cli(t, "--cache", tier, cmd)
		if code != 0 || !strings.Contains(stderr, "near tier "+dir) {
			t.Errorf("%s through a tier: exit %d, stderr %q (want 0, naming the near tier %s)\n%s", cmd, code, stderr, dir, stdout)
		}
	}
}

// TestWarmOnS3ThenGC: warm and resolve work on an S3 cache (the real
// versitygw) and record the image in the bucket, which ls lists; gc
// collects the bucket, keeping every blob the record reaches and
// removing one nothing reaches; verify needs what S3 lacks and says so.
func TestWarmOnS3ThenGC(t *testing.T) {
	ti := pushTestImage(t)
	srv := testserver.StartS3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	bucket := srv.NewBucket(t)
	s3url := "s3://" + bucket + "/cache?region=us-east-1&use_path_style=true&endpoint=" + url.QueryEscape(srv.Endpoint)

	doc := cliJSON(t, 0, "--cache", s3url, "warm", bothPlatforms, ti.ref)
	if w := image(t, doc, 0); w["source"] != "pulled" || w["blobs"] != float64(testImageBlobs) {
		t.Fatalf("warm on S3 = %v, want pulled, %d blobs", w, testImageBlobs)
	}
	// The blobs are in the bucket: a second warm finds them all.
	doc = cliJSON(t, 0, "--cache", s3url, "warm", bothPlatforms, ti.ref)
	if w := image(t, doc, 0); w["fetched_bytes"] == nil || w["blobs"] != float64(testImageBlobs) {
		t.Fatalf("second warm on S3 = %v", w)
	}
	if img := image(t, cliJSON(t, 0, "--cache", s3url, "ls"), 0); img["ref"] != ti.ref || img["blobs"] != float64(testImageBlobs) {
		t.Errorf("ls on S3 = %v, want the record of %s", img, ti.ref)
	}
	garbage := []byte("a blob nothing references")
	sum := sha256.Sum256(garbage)
	if _, err := srv.Client().PutObject(t.Context(), &awss3.PutObjectInput{Bucket: &bucket,
		Key: aws.String("cacheblobs/sha256:" + hex.EncodeToString(sum[:])), Body: bytes.NewReader(garbage)}); err != nil {
		t.Fatal(err)
	}
	doc = cliJSON(t, 0, "--cache", s3url, "gc", "--max-bytes", "0", "--min-age", "0s")
	if doc["removed"] != float64(1) || doc["reachable"] != float64(testImageBlobs) || doc["records"] != float64(1) {
		t.Errorf("gc on S3 = %v, want the unreferenced blob removed and the %d reachable kept", doc, testImageBlobs)
	}
	// A tier's far tier is the same bucket: gc --far collects it.
	doc = cliJSON(t, 0, "--cache", tierURL(t.TempDir(), s3url), "gc", "--far", "--dry-run", "--max-bytes", "0", "--min-age", "0s")
	if doc["dry_run"] != true || doc["records"] != float64(1) || doc["removed"] != float64(0) {
		t.Errorf("gc --far --dry-run of a tier over the bucket = %v", doc)
	}
	stdout, stderr, code := cli(t, "--cache", s3url, "verify")
	if code != exitUsage || !strings.Contains(stderr, "verify needs") || !strings.Contains(stderr, "blob check") ||
		!strings.Contains(stderr, "scheme s3") || !strings.Contains(stderr, "s3://"+bucket+"/cache") {
		t.Errorf("verify on S3: exit %d, stderr %q: want exit 2 naming the scheme and what is missing\n%s", code, stderr, stdout)
	}
	if strings.Contains(stdout+stderr, srv.SecretKey) || strings.Contains(stderr, "endpoint=") {
		t.Errorf("verify on S3 printed the secret or the query string: %s", stderr)
	}
	// stats counts the bucket's blobs and records; its counters are this
	// process's.
	if doc := cliJSON(t, 0, "--cache", s3url, "stats"); doc["blobs"] != float64(testImageBlobs) || doc["lifetime"] != false || doc["images"] != float64(1) {
		t.Errorf("stats on S3 = %v, want %d blobs, no lifetime counters, one image", doc, testImageBlobs)
	}
}

// TestPlainDirectoryAndFileURLAreTheSameCache: no scheme still means a
// directory, and file:// names the same store.
func TestPlainDirectoryAndFileURLAreTheSameCache(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	cliJSON(t, 0, "--cache", dir, "warm", bothPlatforms, ti.ref)
	if img := image(t, cliJSON(t, 0, "--cache", "file://"+dir, "ls"), 0); img["ref"] != ti.ref {
		t.Errorf("ls of file://%s = %v, want %s", dir, img, ti.ref)
	}
	if doc := cliJSON(t, 0, "--cache", "file://"+dir, "gc"); doc["kept"] != float64(testImageBlobs) {
		t.Errorf("gc of file://%s = %v, want %d kept", dir, doc, testImageBlobs)
	}
	// A file:// URL of a directory that is not a cache is refused as a
	// plain one is.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := cli(t, "--cache", "file://"+other, "ls"); code != exitUsage || !strings.Contains(stderr, "not a cache") {
		t.Errorf("ls of file:// of a non-cache: exit %d, %s", code, stderr)
	}
}

// TestBadCacheURL: a cache URL that cannot be opened is a usage error,
// and no credential in it is echoed, in text or JSON.
func TestBadCacheURL(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-supersecret"
	for _, raw := range []string{
		"s3://AKIAUSER:" + secret + "@bucket/prefix",
		"bogus://user:" + secret + "@host/x",
		"s3://bucket/x?endpoint=" + url.QueryEscape("http://u:"+secret+"@127.0.0.1:1"),
		"tier://?near=" + url.QueryEscape("file:///tmp/x") + "&far=" + url.QueryEscape("s3://u:"+secret+"@b/p"),
		"file://u:" + secret + "@%zz/dir",
		"mem://?max_bytes=lots&token=" + secret,
	} {
		for _, json := range []bool{false, true} {
			args := []string{"--cache", raw, "stats"}
			if json {
				args = append([]string{"--json"}, args...)
			}
			stdout, stderr, code := cli(t, args...)
			if code != exitUsage {
				t.Errorf("%v: exit %d, want %d\n%s%s", args, code, exitUsage, stdout, stderr)
			}
			if strings.Contains(stdout+stderr, secret) {
				t.Errorf("%v echoed the secret:\nstdout: %s\nstderr: %s", args, stdout, stderr)
			}
		}
	}
}

// TestLsRefusesACacheWithoutRoots: mem:// keeps no roots beyond the
// process, nor does a tier in front of it.
func TestLsRefusesACacheWithoutRoots(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"mem://", "tier://?near=mem%3A%2F%2F&far=mem%3A%2F%2F"} {
		_, stderr, code := cli(t, "--cache", raw, "ls")
		if code != exitUsage || !strings.Contains(stderr, "ls needs the roots") {
			t.Errorf("ls on %s: exit %d, stderr %q", raw, code, stderr)
		}
	}
}

// TestStatsShowsLifetimeCountersOfEarlierInvocations: each invocation is
// a new Store (a new process, as far as the counters go); stats after two
// warms shows what they did.
func TestStatsShowsLifetimeCountersOfEarlierInvocations(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	cliJSON(t, 0, "--cache", dir, "warm", bothPlatforms, ti.ref)
	first := cliJSON(t, 0, "--cache", dir, "stats")
	cliJSON(t, 0, "--cache", dir, "warm", bothPlatforms, ti.ref)
	second := cliJSON(t, 0, "--cache", dir, "stats")

	counters := func(doc map[string]any, key string) map[string]any {
		m, _ := doc[key].(map[string]any)
		if m == nil {
			t.Fatalf("stats --json has no %q: %v", key, doc)
		}
		return m
	}
	if first["lifetime"] != true || first["since"] == nil {
		t.Errorf("stats after a warm = %v, want lifetime counters with a start", first)
	}
	if r := counters(first, "resolver"); r["pulled"] != 1.0 || r["resolves"] != 1.0 || r["bytes_fetched"] == 0.0 {
		t.Errorf("resolver counters after one warm = %v, want 1 pull in 1 resolve", r)
	}
	if c := counters(first, "counters"); c["bytes_in"] == 0.0 {
		t.Errorf("store counters after one warm = %v, want bytes in", c)
	}
	r := counters(second, "resolver")
	if r["pulled"] != 1.0 || r["revalidated"] != 1.0 || r["resolves"] != 2.0 {
		t.Errorf("resolver counters after a second warm = %v, want 1 pull and 1 revalidation in 2 resolves", r)
	}
	if c := counters(second, "counters"); c["hits"].(float64) <= counters(first, "counters")["hits"].(float64) {
		t.Errorf("the second warm's hits did not add up: %v then %v", counters(first, "counters"), c)
	}
}
