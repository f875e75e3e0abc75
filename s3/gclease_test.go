package s3_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	s3cache "github.com/buildcache/buildcache/s3"
)

// TestGCKeepsLeasedBlobs: a blob a live lease named (a pull looked at
// it) is kept by a collector in another process; once released, or once
// its holder died and the TTL passed, it goes, and so does the lease.
func TestGCKeepsLeasedBlobs(t *testing.T) {
	f := newFleet(t)
	holder, collector := f.proc(), f.proc()
	ctx := t.Context()
	old := f.clock.Now().Add(-2 * time.Hour)
	looked := put(t, ctx, holder, []byte("looked at by a pull"))
	other := put(t, ctx, holder, []byte("nobody's"))
	f.age(looked, old)
	f.age(other, old)

	leased, release, err := holder.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Stat(leased, looked); err != nil {
		t.Fatal(err)
	}
	if n := len(f.keys("buildcache/leases/")); n != 1 {
		t.Fatalf("%d lease objects after a Stat under a lease, want 1", n)
	}
	rep, err := collector.GC(ctx, s3cache.GCMaxBytes(0))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 1 || rep.Leased != 1 || rep.Leases != 1 {
		t.Fatalf("GC with a live lease: %+v", rep)
	}
	if _, err := collector.Stat(ctx, looked); err != nil {
		t.Fatalf("the leased blob was removed: %v", err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.keys("buildcache/leases/")); n != 0 {
		t.Fatalf("%d lease objects after release", n)
	}

	// A holder that dies: its lease keeps the blob for the lease's TTL.
	leased, _, err = holder.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Stat(leased, looked); err != nil {
		t.Fatal(err)
	}
	s3cache.AbandonLeases(leased)
	f.clock.Advance(s3cache.DefaultLeaseTTL / 2)
	if rep, err := collector.GC(ctx, s3cache.GCMaxBytes(0)); err != nil || rep.Leased != 1 || rep.Removed != 0 {
		t.Fatalf("GC within a dead holder's lease TTL: %+v, %v", rep, err)
	}
	f.clock.Advance(s3cache.DefaultLeaseTTL)
	rep, err = collector.GC(ctx, s3cache.GCMaxBytes(0))
	if err != nil || rep.Removed != 1 || rep.LeasesExpired != 1 {
		t.Fatalf("GC after a dead holder's lease TTL: %+v, %v", rep, err)
	}
	if n := len(f.keys("buildcache/leases/")); n != 0 {
		t.Fatalf("%d lease objects left after the collection removed the expired one", n)
	}
}

// TestLeaseWaitsOutSweepingCollector: a pull that names a blob while a
// collector is deleting waits until the collector is done before it
// looks at the blob; the collector deletes only within its window.
func TestLeaseWaitsOutSweepingCollector(t *testing.T) {
	f := newFleet(t)
	holder, collector := f.proc(), f.proc()
	ctx := t.Context()
	d := put(t, ctx, holder, []byte("a blob"))
	end, ok, err := s3cache.BeginSweep(ctx, collector, time.Minute)
	if err != nil || !ok {
		t.Fatalf("BeginSweep = %v, %v", ok, err)
	}
	var polls atomic.Int32
	s3cache.SetSleep(holder, func(ctx context.Context, dt time.Duration) error {
		if polls.Add(1) == 3 {
			end() // the collector finishes
		}
		f.clock.Advance(dt)
		return nil
	})
	leased, release, err := holder.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := holder.Stat(leased, d); err != nil {
		t.Fatal(err)
	}
	if polls.Load() != 3 || s3cache.SweepWaits(holder) != 1 {
		t.Fatalf("the holder polled %d times (%d waits), want 3 polls until the marker went", polls.Load(), s3cache.SweepWaits(holder))
	}
	// A marker nobody removes is waited out for its window, at most.
	_, ok, err = s3cache.BeginSweep(ctx, collector, time.Minute)
	if err != nil || !ok {
		t.Fatalf("BeginSweep = %v, %v", ok, err)
	}
	before := f.clock.Now()
	if _, err := holder.Stat(leased, put(t, ctx, collector, []byte("another"))); err != nil {
		t.Fatal(err)
	}
	if waited := f.clock.Now().Sub(before); waited < time.Minute || waited > time.Minute+time.Second {
		t.Fatalf("waited %v for a marker left in place, want its window of 1m", waited)
	}
}

// TestGCTwoCollectorsAtOnce: a second collector finds the first one's
// marker and does nothing; a collector deletes nothing once its window
// is over, and leaves the rest (Deferred) to the next run.
func TestGCTwoCollectorsAtOnce(t *testing.T) {
	f := newFleet(t)
	first, second := f.proc(), f.proc()
	ctx := t.Context()
	old := f.clock.Now().Add(-2 * time.Hour)
	var garbage []v1.Hash
	for i := range 4 {
		d := put(t, ctx, first, []byte{'g', byte(i)})
		f.age(d, old)
		garbage = append(garbage, d)
	}
	end, ok, err := s3cache.BeginSweep(ctx, first, time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	rep, err := second.GC(ctx, s3cache.GCMaxBytes(0))
	if err != nil || !rep.Skipped || rep.Removed != 0 {
		t.Fatalf("GC while another collects: %+v, %v; want skipped", rep, err)
	}
	end()

	// The window runs out after the second removal.
	n := 0
	rep, err = second.GC(ctx, s3cache.GCMaxBytes(0), s3cache.GCWindow(time.Minute), s3cache.GCCandidates(func(s3cache.GCCandidate) {
		if n++; n == 2 {
			f.clock.Advance(time.Minute)
		}
	}))
	if err != nil || rep.Removed != 2 || rep.Deferred != 2 {
		t.Fatalf("GC whose window ran out: %+v, %v", rep, err)
	}
	if keys := f.keys("buildcache/gc/"); len(keys) != 0 {
		t.Fatalf("markers left: %v", keys)
	}
	rep, err = first.GC(ctx, s3cache.GCMaxBytes(0))
	if err != nil || rep.Removed != 2 {
		t.Fatalf("the next GC: %+v, %v; want the 2 deferred removed", rep, err)
	}
}

// TestGCDropsBuildKitManifestWrittenMeanwhile: BuildKit found a blob
// there (its export does not rewrite what exists), the collection
// removed it, and BuildKit then wrote a manifest listing it. The
// collection deletes that manifest rather than leave it pointing at
// nothing; a manifest written meanwhile that lists no removed blob
// stays.
func TestGCDropsBuildKitManifestWrittenMeanwhile(t *testing.T) {
	f := newFleet(t)
	c := f.proc()
	ctx := t.Context()
	d := put(t, ctx, c, []byte("old unreferenced cache layer"))
	kept := put(t, ctx, c, []byte("a fresh cache layer"))
	f.age(d, f.clock.Now().Add(-2*time.Hour))
	var written gate
	rep, err := c.GC(ctx, s3cache.GCMaxBytes(0), s3cache.GCCandidates(func(s3cache.GCCandidate) {
		written.do(func() {
			f.putObject("ci/manifests/late", buildkitManifest(d))
			f.putObject("ci/manifests/fine", buildkitManifest(kept))
		})
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.ManifestsDropped) != 1 || !strings.HasSuffix(rep.ManifestsDropped[0], "manifests/late") {
		t.Fatalf("ManifestsDropped = %v, want the late manifest", rep.ManifestsDropped)
	}
	if f.exists("ci/manifests/late") || !f.exists("ci/manifests/fine") {
		t.Fatalf("late manifest there: %v, fine manifest there: %v", f.exists("ci/manifests/late"), f.exists("ci/manifests/fine"))
	}
}

// TestGCPrunesRecords: records not checked for longer than asked are
// deleted, and what only they reached goes with them.
func TestGCPrunesRecords(t *testing.T) {
	f := newFleet(t)
	c := f.proc()
	ctx := t.Context()
	oldTop, oldBlobs := image(t, c, "old", []byte("old layer"))
	newTop, _ := image(t, c, "new", []byte("new layer"))
	now := f.clock.Now()
	for _, d := range oldBlobs {
		f.age(d, now.Add(-48*time.Hour))
	}
	if err := c.RecordRoot(ctx, root(oldTop, "r.example/app:old", now.Add(-30*24*time.Hour))); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordRoot(ctx, root(newTop, "r.example/app:new", now)); err != nil {
		t.Fatal(err)
	}
	rep, err := c.GC(ctx, s3cache.GCPruneRecords(7*24*time.Hour), s3cache.GCMaxBytes(0))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.RecordsPruned) != 1 || rep.RecordsPruned[0] != "r.example/app:old" || rep.Records != 1 || rep.Removed != len(oldBlobs) {
		t.Fatalf("GC pruning records older than 7d: %+v (%d blobs only the old record reached)", rep, len(oldBlobs))
	}
	if _, ok, _ := c.Root(ctx, "r.example/app:new"); !ok {
		t.Fatal("the recent record was pruned")
	}
}
