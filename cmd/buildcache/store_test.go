package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
)

// TestReadCommandsRefuseADirectoryThatIsNotACache: ls, stats, verify and
// gc on a non-empty directory without an oci-layout leave it alone.
func TestReadCommandsRefuseADirectoryThatIsNotACache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"ls", "stats", "verify", "gc"} {
		_, stderr, code := cli(t, "--cache", dir, cmd)
		if code == 0 || !strings.Contains(stderr, "not a cache") {
			t.Errorf("%s on a directory that is not a cache: exit %d, stderr %q; want a refusal", cmd, code, stderr)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory has %d entries after the refused commands, want only its own file", len(entries))
	}
	empty := t.TempDir()
	if _, stderr, code := cli(t, "--cache", empty, "ls"); code != 0 {
		t.Errorf("ls on an empty directory: exit %d, %s", code, stderr)
	}
}

// TestGCCountsOnlyNamedEntriesAsRecordedImages: an index.json entry
// without a reference name, as another tool writes one, keeps its blobs
// but is not a recorded image.
func TestGCCountsOnlyNamedEntriesAsRecordedImages(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("another tool's blob")
	d, _, _ := v1.SHA256(bytes.NewReader(data))
	if err := s.Put(t.Context(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
		im.Manifests = append(im.Manifests, v1.Descriptor{MediaType: types.OCILayer, Digest: d, Size: int64(len(data))})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	doc := cliJSON(t, 0, "--cache", dir, "gc", "--max-bytes", "0")
	if doc["removed"] != 0.0 || doc["reachable"] != float64(testImageBlobs+1) || doc["recorded"] != float64(testImageBlobs) {
		t.Errorf("gc = %v, want nothing removed, %d reachable, %d of recorded images", doc, testImageBlobs+1, testImageBlobs)
	}
	stdout, _, code := cli(t, "--cache", dir, "gc")
	if want := "(9 of recorded images, 1 of other index.json entries)"; code != 0 || !strings.Contains(stdout, want) {
		t.Errorf("gc printed %q, want it to say %q", stdout, want)
	}
	if doc := cliJSON(t, 0, "--cache", dir, "stats"); doc["images"] != 1.0 {
		t.Errorf("stats images = %v, want 1", doc["images"])
	}
}

// TestWarmNeverWithALinkedBlob: a layer replaced by a link to a file
// outside the cache is not a complete image.
func TestWarmNeverWithALinkedBlob(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}
	layers, err := ti.amd.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	size, _ := layers[0].Size()
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, bytes.Repeat([]byte("x"), int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(outside, old, old); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blobs", "sha256", d.Hex)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, p); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := cli(t, "--cache", dir, "warm", "--policy=never", bothPlatforms, ti.ref); code == 0 {
		t.Errorf("warm --policy never with a linked layer: exit 0, want the image reported incomplete\n%s", stderr)
	}
	if info, err := os.Stat(outside); err != nil || !info.ModTime().Equal(old) {
		t.Errorf("the outside file: %v, %v; want it untouched", info, err)
	}
}

// TestRevalidatingWarmOnAReadOnlyCache: a warm that only revalidates
// succeeds on a cache mounted read-only.
func TestRevalidatingWarmOnAReadOnlyCache(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount the cache read-only")
	}
	ti := pushTestImage(t)
	dir := t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", bothPlatforms, ti.ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Resolved long ago: a revalidation now would record its time.
	if err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
		for i := range im.Manifests {
			im.Manifests[i].Annotations[cache.AnnotationResolvedAt] = "2020-01-01T00:00:00Z"
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Skipf("remount read-only: %v", err)
	}
	doc := cliJSON(t, 0, "--cache", dir, "warm", bothPlatforms, ti.ref)
	if img := image(t, doc, 0); img["source"] != "revalidated" {
		t.Errorf("warm on a read-only cache = %v, want revalidated", img)
	}
	if _, stderr, code := cli(t, "--cache", dir, "ls"); code != 0 {
		t.Errorf("ls on a read-only cache: exit %d\n%s", code, stderr)
	}
}

// TestGCDryRun: gc --dry-run lists the blobs gc would remove with their
// reason and removes none.
func TestGCDryRun(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a blob no image needs")
	d, _, _ := v1.SHA256(bytes.NewReader(data))
	if err := s.Put(t.Context(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	doc := cliJSON(t, 0, "--cache", dir, "gc", "--dry-run", "--ttl", "0s")
	cands, _ := doc["candidates"].([]any)
	if doc["dry_run"] != true || doc["removed"] != 1.0 || len(cands) != 1 {
		t.Fatalf("gc --dry-run = %v, want one candidate", doc)
	}
	c := cands[0].(map[string]any)
	if c["digest"] != d.String() || c["reason"] != "expired" || c["size"] != float64(len(data)) {
		t.Fatalf("candidate %v, want %s expired", c, d)
	}
	if _, err := s.Stat(t.Context(), d); err != nil {
		t.Fatalf("gc --dry-run removed the blob: %v", err)
	}
	stdout, _, code := cli(t, "--cache", dir, "gc", "--dry-run", "--max-bytes", "1")
	if want := "would remove " + d.String(); code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, "(over-budget)") {
		t.Fatalf("gc --dry-run printed %q (exit %d), want %q with its reason", stdout, code, want)
	}
	if _, _, code := cli(t, "--cache", dir, "gc", "--dry-run", "--prune-older-than", "1d"); code == 0 {
		t.Fatal("gc --dry-run --prune-older-than succeeded; a dry run must not prune")
	}
	if _, err := s.Stat(t.Context(), d); err != nil {
		t.Fatalf("gc --dry-run removed the blob: %v", err)
	}
}
