package localfs_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// onDisk is the bytes of the blobs in dir's blobs/sha256.
func onDisk(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		if err == nil {
			total += info.Size()
		}
	}
	return total
}

func TestBudgetEvictsDownToLowWater(t *testing.T) {
	clk := newClock()
	s := newStore(t, localfs.WithMaxBytes(10_000), localfs.WithClock(clk.Now)) // default low water: 9,000 bytes
	var blobs []cachetest.Blob
	for i := range 12 {
		blobs = append(blobs, cachetest.NewBlob(uint64(100+i), 1000))
	}
	for _, b := range blobs[:10] {
		putBlob(t, s, b)
		clk.Advance(time.Minute)
	}
	if n := s.Stats().Evictions; n != 0 {
		t.Fatalf("%d evictions filling the budget exactly", n)
	}
	// 11 KB cannot fit 10 KB: evict down to 9 KB with the new blob, the
	// two least recently used.
	putBlob(t, s, blobs[10])
	if n := s.Stats().Evictions; n != 2 {
		t.Fatalf("Put over the budget made %d evictions, want 2 (down to the low-water mark)", n)
	}
	for i, b := range blobs[:11] {
		if want := i >= 2; present(t, s, b.Digest) != want {
			t.Fatalf("blob %d present=%v, want %v: the least recently used go first", i, !want, want)
		}
	}
	// The room the eviction made takes the next Put without another one.
	putBlob(t, s, blobs[11])
	if n := s.Stats().Evictions; n != 2 {
		t.Fatalf("the Put after an eviction to the low-water mark evicted again (%d evictions)", n)
	}
	if used := onDisk(t, s.Dir()); used > 10_000 {
		t.Fatalf("%d bytes on disk, over the budget of 10000", used)
	}
}

// TestBudgetHoldsAcrossStores puts from two stores on one directory, as
// two processes would: each must see what the other wrote, so the two
// together never pass the budget. Before the usage record each counted
// only its own Puts.
func TestBudgetHoldsAcrossStores(t *testing.T) {
	dir := t.TempDir()
	const budget = 8_000
	var stores [2]*localfs.Store
	for i := range stores {
		s, err := localfs.Open(dir, localfs.WithMaxBytes(budget))
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	for i := range 40 {
		b := cachetest.NewBlob(uint64(1000+i), 700)
		putBlob(t, stores[i%2], b)
		if used := onDisk(t, dir); used > budget {
			t.Fatalf("after Put %d: %d bytes on disk, over the budget of %d", i, used, budget)
		}
	}
	if stores[0].Stats().Evictions+stores[1].Stats().Evictions == 0 {
		t.Fatal("28 KB through an 8 KB budget without an eviction")
	}
}

// TestBudgetUnknownSizeIsReserved: a Put of unknown size reserves its
// bytes once they are known, evicting first if they do not fit.
func TestBudgetUnknownSizeIsReserved(t *testing.T) {
	s := newStore(t, localfs.WithMaxBytes(3000), localfs.WithLowWater(1))
	a, b := cachetest.NewBlob(1, 2000), cachetest.NewBlob(2, 2000)
	putBlob(t, s, a)
	if err := s.Put(t.Context(), b.Digest, -1, bytes.NewReader(b.Data)); err != nil {
		t.Fatalf("Put of unknown size: %v", err)
	}
	if present(t, s, a.Digest) {
		t.Fatal("a Put of unknown size passed the budget: the older blob was not evicted")
	}
	if used := onDisk(t, s.Dir()); used > 3000 {
		t.Fatalf("%d bytes on disk, over the budget", used)
	}
}

// TestEvictionSeesManifestsThatArriveLater: reachability is cached by
// index.json's version, but a manifest absent when it was computed may
// arrive without index.json changing (another platform of a recorded
// index); what it references must not be evicted then.
func TestEvictionSeesManifestsThatArriveLater(t *testing.T) {
	clk := newClock()
	s := newStore(t, localfs.WithMaxBytes(20_000), localfs.WithClock(clk.Now))
	ctx := t.Context()
	layer := cachetest.NewBlob(7, 3000)
	cfg := cachetest.NewBlob(8, 100)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		cfg.Digest.String() + `","size":100},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + layer.Digest.String() + `","size":3000}]}`)
	md := cachetest.Digest(manifest)
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` +
		md.String() + `","size":` + strconv.Itoa(len(manifest)) + `}]}`)
	id := cachetest.Digest(index)
	putBlob(t, s, cachetest.Blob{Data: index, Digest: id})
	if err := s.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		im.Manifests = append(im.Manifests, v1.Descriptor{MediaType: types.OCIImageIndex, Digest: id, Size: int64(len(index)),
			Annotations: map[string]string{cache.AnnotationRefName: "example.com/multi:1"}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// An eviction computes reachability while the platform is absent.
	filler := 0
	fill := func(n int) {
		for range n {
			clk.Advance(time.Second)
			putBlob(t, s, cachetest.NewBlob(uint64(5000+filler), 2000))
			filler++
		}
	}
	fill(15)
	if s.Stats().Evictions == 0 {
		t.Fatal("no eviction")
	}
	// The platform arrives, index.json unchanged; it is the oldest now.
	for _, b := range []cachetest.Blob{layer, cfg, {Data: manifest, Digest: md}} {
		putBlob(t, s, b)
	}
	clk.Advance(time.Hour)
	fill(30)
	for _, d := range []v1.Hash{layer.Digest, cfg.Digest, md} {
		if !present(t, s, d) {
			t.Fatalf("%s, reachable from a root through a manifest that arrived after reachability was cached, was evicted", d)
		}
	}
}

func TestGCDryRunListsWithoutRemoving(t *testing.T) {
	clk := newClock()
	s := newStore(t, localfs.WithClock(clk.Now))
	_, _ = putRandomImage(t, s, 500, 1, "root:v1")
	old, mid, recent := cachetest.NewBlob(1, 1000), cachetest.NewBlob(2, 1000), cachetest.NewBlob(3, 1000)
	putBlob(t, s, old)
	clk.Advance(48 * time.Hour)
	putBlob(t, s, mid)
	clk.Advance(time.Hour)
	putBlob(t, s, recent)
	clk.Advance(time.Minute)
	total := onDisk(t, s.Dir())
	// The TTL takes old; the budget, with 1,000 bytes too many, takes mid
	// next (recent is kept: after mid the rest fits).
	opts := []localfs.GCOption{localfs.GCTTL(24 * time.Hour), localfs.GCMaxBytes(total - 1500)}
	var listed []localfs.GCCandidate
	var progressed [2]int
	rep, err := s.GC(t.Context(), append(opts, localfs.GCDryRun(),
		localfs.GCCandidates(func(c localfs.GCCandidate) { listed = append(listed, c) }),
		localfs.GCProgress(func(done, total int) { progressed = [2]int{done, total} }))...)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		d      v1.Hash
		reason localfs.GCReason
	}{{old.Digest, localfs.GCExpired}, {mid.Digest, localfs.GCOverBudget}}
	if len(listed) != len(want) {
		t.Fatalf("dry run listed %+v, want %v", listed, want)
	}
	for i, w := range want {
		if listed[i].Digest != w.d || listed[i].Reason != w.reason || listed[i].Size != 1000 {
			t.Fatalf("candidate %d = %+v, want %s for %s", i, listed[i], w.d, w.reason)
		}
	}
	if !rep.DryRun || rep.Removed != 2 || rep.FreedBytes != 2000 {
		t.Fatalf("dry-run report %+v, want 2 blobs, 2000 bytes, DryRun", rep)
	}
	if progressed[0] != progressed[1] || progressed[1] != rep.Removed+rep.Kept {
		t.Fatalf("last progress %v, want done = total = %d", progressed, rep.Removed+rep.Kept)
	}
	for _, b := range []cachetest.Blob{old, mid, recent} {
		if !present(t, s, b.Digest) {
			t.Fatalf("dry run removed %s", b.Digest)
		}
	}
	// The real run removes what the dry run listed.
	var removed []v1.Hash
	real, err := s.GC(t.Context(), append(opts, localfs.GCCandidates(func(c localfs.GCCandidate) { removed = append(removed, c.Digest) }))...)
	if err != nil {
		t.Fatal(err)
	}
	if real.Removed != 2 || len(removed) != 2 || removed[0] != old.Digest || removed[1] != mid.Digest || present(t, s, old.Digest) || present(t, s, mid.Digest) || !present(t, s, recent.Digest) {
		t.Fatalf("GC after the dry run: %+v, removed %v", real, removed)
	}
}

func TestVerifyProgress(t *testing.T) {
	s := newStore(t)
	for i := range 5 {
		putBlob(t, s, cachetest.NewBlob(uint64(i), 100))
	}
	var calls [][2]int
	rep, err := s.Verify(t.Context(), localfs.VerifyProgress(func(done, total int) { calls = append(calls, [2]int{done, total}) }))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 5 || len(calls) != 6 || calls[0] != [2]int{0, 5} || calls[5] != [2]int{5, 5} {
		t.Fatalf("Verify checked %d, progress calls %v; want 5 and 0/5 .. 5/5", rep.Checked, calls)
	}
}
