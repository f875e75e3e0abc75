package localfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/localfs"
)

// newClock is the manual clock of the LRU and TTL tests.
func newClock() *testclock.Clock {
	return testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

func putBlob(t *testing.T, s cache.LayerCache, b cachetest.Blob) {
	t.Helper()
	if err := s.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatalf("Put %s: %v", b.Digest, err)
	}
}

func readBlob(t *testing.T, s cache.LayerCache, d v1.Hash) ([]byte, error) {
	t.Helper()
	rc, err := s.Get(t.Context(), d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func present(t *testing.T, s cache.LayerCache, d v1.Hash) bool {
	t.Helper()
	_, err := s.Stat(t.Context(), d)
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Stat %s: %v", d, err)
	}
	return err == nil
}

// putRandomImage stores a random image of layers layers of size bytes
// each and makes its manifest the root refName.
func putRandomImage(t *testing.T, s *localfs.Store, size, layers int64, refName string) (v1.Image, v1.Descriptor) {
	t.Helper()
	img, err := random.Image(size, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img, putImage(t, s, img, refName)
}

// putImage stores every blob of img and makes its manifest a root.
func putImage(t *testing.T, s *localfs.Store, img v1.Image, refName string) v1.Descriptor {
	t.Helper()
	ctx := t.Context()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		size, _ := l.Size()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		err = s.Put(ctx, d, size, rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg, _ := img.RawConfigFile()
	cfgName, _ := img.ConfigName()
	if err := s.Put(ctx, cfgName, int64(len(cfg)), bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	md, _ := img.Digest()
	mt, _ := img.MediaType()
	if err := s.Put(ctx, md, int64(len(raw)), bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	desc := v1.Descriptor{MediaType: mt, Digest: md, Size: int64(len(raw)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": refName}}
	if err := s.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		im.Manifests = append(im.Manifests, desc)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return desc
}

func TestLayoutIsReadableByGoContainerRegistry(t *testing.T) {
	s := newStore(t)
	_, desc := putRandomImage(t, s, 4096, 3, "example.com/app:v1")

	p, err := layout.FromPath(s.Dir())
	if err != nil {
		t.Fatalf("layout.FromPath on our store: %v", err)
	}
	back, err := p.Image(desc.Digest)
	if err != nil {
		t.Fatalf("reading our image with layout: %v", err)
	}
	if err := validate.Image(back); err != nil {
		t.Fatalf("image read back from our store is invalid: %v", err)
	}
}

func TestOpensLayoutWrittenByGoContainerRegistry(t *testing.T) {
	dir := t.TempDir()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
	if _, err := layout.Write(dir, idx); err != nil {
		t.Fatal(err)
	}
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatalf("Open on a layout written by ggcr: %v", err)
	}
	n := 0
	if err := s.Walk(t.Context(), func(d v1.Hash, size int64) error {
		n++
		_, err := readBlob(t, s, d)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n != 4 { // manifest, config, two layers
		t.Fatalf("Walk saw %d blobs, want 4", n)
	}
	// Everything is reachable from ggcr's index.json, so a strict GC keeps it.
	rep, err := s.GC(t.Context(), localfs.GCMaxBytes(1))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 0 || rep.Roots != 4 {
		t.Fatalf("GC = %+v, want all 4 blobs kept as reachable from roots", rep)
	}
}

func TestOpenRefusesWhatIsNotALayout(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"other layout version": {"oci-layout": `{"imageLayoutVersion":"2.0.0"}`},
		"oci-layout not JSON":  {"oci-layout": `hello`},
		"index.json not JSON":  {"oci-layout": `{"imageLayoutVersion":"1.0.0"}`, "index.json": `{"manifests": [`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for f, content := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := localfs.Open(dir); err == nil {
				t.Fatal("Open succeeded")
			}
			for f, content := range files { // and nothing was overwritten
				if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != content {
					t.Fatalf("%s was changed to %q", f, b)
				}
			}
		})
	}
	if _, err := localfs.Open(""); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
}

func TestBudgetEvictsLeastRecentlyUsedAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	open := func() *localfs.Store {
		// A low-water mark of 1 evicts only what each Put needs, so each
		// Put here evicts exactly one blob: the least recently used.
		s, err := localfs.Open(dir, localfs.WithMaxBytes(3000), localfs.WithLowWater(1), localfs.WithClock(clk.Now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	blobs := make([]cachetest.Blob, 5)
	for i := range blobs {
		blobs[i] = cachetest.NewBlob(uint64(i), 1000)
	}
	for _, b := range blobs[:3] {
		putBlob(t, s, b)
		clk.Advance(time.Minute)
	}
	if _, err := readBlob(t, s, blobs[0].Digest); err != nil { // 0 is now the most recent
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	putBlob(t, s, blobs[3])
	if present(t, s, blobs[1].Digest) {
		t.Fatal("blob 1, the least recently used, was not evicted")
	}
	for _, i := range []int{0, 2, 3} {
		if !present(t, s, blobs[i].Digest) {
			t.Fatalf("blob %d evicted instead of the least recently used", i)
		}
	}
	if st := s.Stats(); st.Evictions != 1 {
		t.Fatalf("Evictions = %d, want 1", st.Evictions)
	}

	// A new process sees the same order: the LRU clock is on disk.
	clk.Advance(time.Minute)
	s2 := open()
	putBlob(t, s2, blobs[4])
	if present(t, s2, blobs[2].Digest) {
		t.Fatal("after a restart, blob 2 (now the least recently used) was not evicted")
	}
	for _, i := range []int{0, 3, 4} {
		if !present(t, s2, blobs[i].Digest) {
			t.Fatalf("after a restart, blob %d was evicted out of LRU order", i)
		}
	}
}

func TestBudgetNeverEvictsRoots(t *testing.T) {
	s := newStore(t, localfs.WithMaxBytes(20<<10))
	img, _ := putRandomImage(t, s, 3000, 3, "root:v1") // ~11 KiB with config and manifest, all reachable from index.json
	loose := cachetest.NewBlob(7, 4000)
	putBlob(t, s, loose)

	big := cachetest.NewBlob(8, 6000)
	putBlob(t, s, big) // fits only by evicting the loose blob
	if present(t, s, loose.Digest) {
		t.Fatal("the unreachable blob was kept while the budget was exceeded")
	}
	// Even evicting "big" would leave too little room: nothing may be evicted.
	tooBig := cachetest.NewBlob(9, 10000)
	err := s.Put(t.Context(), tooBig.Digest, 10000, bytes.NewReader(tooBig.Data))
	if !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("Put that cannot fit without evicting roots = %v, want ErrNoSpace", err)
	}
	if present(t, s, tooBig.Digest) {
		t.Fatal("a refused blob was stored")
	}
	if !present(t, s, big.Digest) {
		t.Fatal("a write that could not fit evicted a blob anyway")
	}
	rep, err := s.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Bad) != 0 || len(rep.Missing) != 0 {
		t.Fatalf("after ErrNoSpace the store is damaged: %+v", rep)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if _, err := readBlob(t, s, d); err != nil {
			t.Fatalf("root layer %s unreadable after eviction pressure: %v", d, err)
		}
	}
}

func TestMinFreeBytesRefusesBeforeWriting(t *testing.T) {
	s := newStore(t, localfs.WithMinFreeBytes(1<<62))
	b := cachetest.NewBlob(1, 100)
	err := s.Put(t.Context(), b.Digest, 100, bytes.NewReader(b.Data))
	if !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("Put = %v, want ErrNoSpace", err)
	}
	if present(t, s, b.Digest) {
		t.Fatal("blob stored despite ErrNoSpace")
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Dir(), ".buildcache", "tmp")); len(entries) != 0 {
		t.Fatalf("temp files left: %v", entries)
	}
}

func TestGCExpiresUnusedBlobsButKeepsRoots(t *testing.T) {
	clk := newClock()
	s := newStore(t, localfs.WithTTL(time.Hour), localfs.WithClock(clk.Now))
	img, _ := putRandomImage(t, s, 1000, 1, "root:v1")
	old, used := cachetest.NewBlob(1, 500), cachetest.NewBlob(2, 500)
	putBlob(t, s, old)
	putBlob(t, s, used)
	clk.Advance(50 * time.Minute)
	if _, err := readBlob(t, s, used.Digest); err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * time.Minute) // old: 70 min unused; used: 20 min
	rep, err := s.GC(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if present(t, s, old.Digest) || !present(t, s, used.Digest) {
		t.Fatalf("GC with TTL 1h: old present=%v (want false), used present=%v (want true)",
			present(t, s, old.Digest), present(t, s, used.Digest))
	}
	if rep.Removed != 1 || rep.Roots != 3 || rep.FreedBytes != 500 {
		t.Fatalf("GC report = %+v, want 1 removed (500 bytes), 3 roots kept", rep)
	}
	md, _ := img.Digest()
	if !present(t, s, md) {
		t.Fatal("GC removed a root manifest")
	}
}

func TestVerifyFindsAndRemovesBadBlobs(t *testing.T) {
	s := newStore(t)
	img, _ := putRandomImage(t, s, 1000, 2, "root:v1")
	good, bad := cachetest.NewBlob(1, 5000), cachetest.NewBlob(2, 5000)
	putBlob(t, s, good)
	putBlob(t, s, bad)
	corrupt(t, s, bad.Digest, cachetest.FlipByte)
	layers, _ := img.Layers()
	gone, _ := layers[0].Digest()
	if err := os.Remove(filepath.Join(s.Dir(), "blobs", "sha256", gone.Hex)); err != nil {
		t.Fatal(err)
	}

	rep, err := s.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Bad) != 1 || rep.Bad[0].Digest != bad.Digest || !errors.Is(rep.Bad[0].Err, cache.ErrCorrupt) {
		t.Fatalf("Verify Bad = %+v, want only %s with ErrCorrupt", rep.Bad, bad.Digest)
	}
	if len(rep.Missing) != 1 || rep.Missing[0] != gone {
		t.Fatalf("Verify Missing = %v, want [%s]", rep.Missing, gone)
	}
	if !present(t, s, bad.Digest) {
		t.Fatal("Verify without VerifyRemove removed a blob")
	}
	rep, err = s.Verify(t.Context(), localfs.VerifyRemove())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 1 || present(t, s, bad.Digest) || !present(t, s, good.Digest) {
		t.Fatalf("Verify(VerifyRemove) = %+v; bad present=%v good present=%v", rep, present(t, s, bad.Digest), present(t, s, good.Digest))
	}
}

func TestUpdateIndexSerialisesWriters(t *testing.T) {
	s := newStore(t)
	var wg sync.WaitGroup
	const n = 20
	for i := range n {
		wg.Go(func() {
			d := cachetest.NewBlob(uint64(i), 10).Digest
			err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
				im.Manifests = append(im.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: d, Size: 10})
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	im, err := s.Index(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != n {
		t.Fatalf("index has %d roots after %d concurrent additions: updates were lost", len(im.Manifests), n)
	}
	// A failing update writes nothing.
	boom := errors.New("boom")
	err = s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error { im.Manifests = nil; return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateIndex = %v, want boom", err)
	}
	if im, _ := s.Index(t.Context()); len(im.Manifests) != n {
		t.Fatal("a failed update changed index.json")
	}
}

func TestOpenSweepsAbandonedTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".buildcache", "tmp")
	oldTemp := filepath.Join(tmp, "abandoned-1.tmp")
	newTemp := filepath.Join(tmp, "abandoned-2.tmp")
	for _, p := range []string{oldTemp, newTemp} {
		if err := os.WriteFile(p, []byte("half a layer"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(oldTemp, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := localfs.Open(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(oldTemp); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a temp file older than the grace period survived Open")
	}
	if _, err := os.Stat(newTemp); err != nil {
		t.Fatal("a temp file younger than the grace period was swept (its writer may be about to lock it)")
	}
	rep, err := s.GC(context.Background(), localfs.GCTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	if rep.TempsRemoved != 0 {
		t.Fatalf("GC swept %d young temp files", rep.TempsRemoved)
	}
}

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "buildcache-example")
	defer os.RemoveAll(dir)

	store, err := localfs.Open(dir, localfs.WithMaxBytes(10<<30))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	layer := []byte("pretend this is a 500 MB base image layer")
	d, _, _ := v1.SHA256(bytes.NewReader(layer))

	if _, err := store.Stat(ctx, d); errors.Is(err, cache.ErrNotFound) {
		fmt.Println("miss: downloading once")
		_ = store.Put(ctx, d, int64(len(layer)), bytes.NewReader(layer))
	}
	rc, _ := store.Get(ctx, d) // verified while read
	b, _ := io.ReadAll(rc)
	rc.Close()
	fmt.Printf("hit: %d bytes from %s\n", len(b), filepath.Join("blobs", "sha256", d.Hex[:12]+"…"))
	// Output:
	// miss: downloading once
	// hit: 41 bytes from blobs/sha256/e198d503352f…
}

func TestFilesAreReadableBySharingUsers(t *testing.T) {
	s := newStore(t)
	b := cachetest.NewBlob(1, 10)
	putBlob(t, s, b)
	for _, p := range []string{filepath.Join(s.Dir(), "blobs", "sha256", b.Digest.Hex), filepath.Join(s.Dir(), "index.json"), filepath.Join(s.Dir(), "oci-layout")} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm()&0o044 != 0o044 {
			t.Errorf("%s has mode %v: other users of a shared cache cannot read it", filepath.Base(p), info.Mode().Perm())
		}
	}
}
