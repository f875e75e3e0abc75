package s3_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	s3cache "github.com/buildcache/buildcache/s3"
)

// TestGCKeepsRootsRemovesGarbage: a collection with a budget of 0 keeps
// what the records and BuildKit's cache manifests reach, and removes
// what nothing reaches.
func TestGCKeepsRootsRemovesGarbage(t *testing.T) {
	f := newFleet(t)
	c := f.proc()
	ctx := t.Context()
	top, imageBlobs := image(t, c, "v1", []byte("layer one"), []byte("layer two"))
	if err := c.RecordRoot(ctx, root(top, "r.example/app:v1", f.clock.Now())); err != nil {
		t.Fatal(err)
	}
	bkLayer := put(t, ctx, c, []byte("a BuildKit cache layer"))
	f.putObject("ci/manifests/buildkit", buildkitManifest(bkLayer))
	garbage := []v1.Hash{put(t, ctx, c, []byte("garbage 1")), put(t, ctx, c, []byte("garbage 2"))}
	young := put(t, ctx, c, []byte("uploaded just now"))
	old := f.clock.Now().Add(-2 * time.Hour)
	for _, d := range append(append([]v1.Hash{bkLayer}, imageBlobs...), garbage...) {
		f.age(d, old)
	}

	dry, err := c.GC(ctx, s3cache.GCMaxBytes(0), s3cache.GCDryRun())
	if err != nil {
		t.Fatal(err)
	}
	if dry.Removed != 2 || !dry.DryRun {
		t.Fatalf("dry run: %+v", dry)
	}
	for _, d := range garbage {
		if _, err := c.Stat(ctx, d); err != nil {
			t.Fatalf("dry run removed %s: %v", d, err)
		}
	}
	var removed []v1.Hash
	rep, err := c.GC(ctx, s3cache.GCMaxBytes(0), s3cache.GCCandidates(func(cd s3cache.GCCandidate) { removed = append(removed, cd.Digest) }))
	if err != nil {
		t.Fatal(err)
	}
	want := GCSummary{Blobs: 9, Removed: 2, Reachable: 6, Young: 1, Records: 1, BuildKitManifests: 1}
	if got := summary(rep); got != want {
		t.Fatalf("GC = %+v, want %+v", got, want)
	}
	slices.SortFunc(removed, func(a, b v1.Hash) int { return cmpHash(a, b) })
	slices.SortFunc(garbage, func(a, b v1.Hash) int { return cmpHash(a, b) })
	if !slices.Equal(removed, garbage) {
		t.Fatalf("removed %v, want the garbage %v", removed, garbage)
	}
	for _, d := range append([]v1.Hash{bkLayer, young}, imageBlobs...) {
		if _, err := c.Stat(ctx, d); err != nil {
			t.Errorf("kept blob %s: %v", d, err)
		}
	}
	for _, d := range garbage {
		if _, err := c.Stat(ctx, d); !errorsIsNotFound(err) {
			t.Errorf("garbage %s: Stat = %v, want ErrNotFound", d, err)
		}
	}
}

// GCSummary is the counts of a GCReport a test compares.
type GCSummary struct {
	Blobs, Removed, Reachable, Leased, Young, Records, BuildKitManifests int
}

func summary(r s3cache.GCReport) GCSummary {
	return GCSummary{r.Blobs, r.Removed, r.Reachable, r.Leased, r.Young, r.Records, r.BuildKitManifests}
}

func cmpHash(a, b v1.Hash) int { return strings.Compare(a.Hex, b.Hex) }

func errorsIsNotFound(err error) bool { return errors.Is(err, cache.ErrNotFound) }

// TestGCBudgetLeastRecentlyUsed: over budget, the least recently used
// go first, and only until the rest fits; TTL expires by age.
func TestGCBudgetLeastRecentlyUsed(t *testing.T) {
	f := newFleet(t)
	c := f.proc()
	ctx := t.Context()
	now := f.clock.Now()
	var blobs []v1.Hash
	for i := range 6 {
		d := put(t, ctx, c, []byte{byte('a' + i), 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'}) // 10 bytes each
		f.age(d, now.Add(-time.Duration(10-i)*time.Hour))                                       // blobs[0] the oldest
		blobs = append(blobs, d)
	}
	rep, err := c.GC(ctx, s3cache.GCMaxBytes(35))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 3 || rep.KeptBytes != 30 {
		t.Fatalf("GC with a budget of 35 bytes over 60: %+v", rep)
	}
	for i, d := range blobs {
		_, err := c.Stat(ctx, d)
		if gone := err != nil; gone != (i < 3) {
			t.Errorf("blob %d (last used %dh ago): gone=%v", i, 10-i, gone)
		}
	}
	rep, err = c.GC(ctx, s3cache.GCTTL(6*time.Hour+30*time.Minute))
	if err != nil || rep.Removed != 1 {
		t.Fatalf("GC with a TTL of 6.5h: %+v, %v; want the 7h-old blob removed", rep, err)
	}
	if _, err := c.Stat(ctx, blobs[3]); err == nil {
		t.Error("the expired blob is still there")
	}
}

// TestGCMemoryBounded: holding at most 5 candidates, a collection of 20
// over budget lists again until the budget holds.
func TestGCMemoryBounded(t *testing.T) {
	f := newFleet(t)
	c := f.proc()
	ctx := t.Context()
	old := f.clock.Now().Add(-2 * time.Hour)
	for i := range 20 {
		f.age(put(t, ctx, c, []byte{byte(i), 'y'}), old.Add(time.Duration(i)*time.Minute))
	}
	rep, err := c.GC(ctx, s3cache.GCMaxBytes(0), s3cache.GCMaxHeld(5))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 20 || rep.MaxHeld > 5 || rep.Passes < 4 {
		t.Fatalf("GC holding 5 of 20: %+v", rep)
	}
}
