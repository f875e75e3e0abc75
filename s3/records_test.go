package s3_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// TestRecordsSharedByProcesses: what one process records, another finds
// with one lookup; an older record never replaces a newer one.
func TestRecordsSharedByProcesses(t *testing.T) {
	f := newFleet(t)
	a, b := f.proc(), f.proc()
	ctx := t.Context()
	top, _ := image(t, a, "v1")
	const name = "registry.example/team/app:v1"
	now := f.clock.Now()

	if _, ok, err := b.Root(ctx, name); err != nil || ok {
		t.Fatalf("Root before any record = %v, %v", ok, err)
	}
	if err := a.RecordRoot(ctx, root(top, name, now)); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.Root(ctx, name)
	if err != nil || !ok || got.Digest != top.Digest || got.Annotations[cache.AnnotationResolvedAt] != now.UTC().Format(time.RFC3339Nano) {
		t.Fatalf("Root from another process = %v, %v, %v; want %s checked at %v", got, ok, err, top.Digest, now)
	}
	// b learnt of an older check: it does not undo a's.
	if err := b.RecordRoot(ctx, root(top, name, now.Add(-time.Hour))); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := a.Root(ctx, name); got.Annotations[cache.AnnotationResolvedAt] != now.UTC().Format(time.RFC3339Nano) {
		t.Fatalf("an older record replaced a newer one: %v", got.Annotations)
	}
	// b writes from a stale read: its conditional write is refused, it
	// reads again and keeps a's newer check.
	if _, _, err := b.Root(ctx, name); err != nil {
		t.Fatal(err)
	}
	newer := now.Add(time.Minute)
	if err := a.RecordRoot(ctx, root(top, name, newer)); err != nil {
		t.Fatal(err)
	}
	if err := b.RecordRoot(ctx, root(top, name, now.Add(30*time.Second))); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := a.Root(ctx, name); got.Annotations[cache.AnnotationResolvedAt] != newer.UTC().Format(time.RFC3339Nano) {
		t.Fatalf("a write from a stale read replaced a newer record: %v", got.Annotations)
	}
	im, err := b.Index(ctx)
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Digest != top.Digest {
		t.Fatalf("Index = %+v, %v", im, err)
	}
}

// TestRecordsConcurrentWritersLoseNothing: 4 processes write one
// reference's record 8 times each, concurrently, each with its own check
// times: the record ends with the latest of them, and records of other
// references written meanwhile all stay.
func TestRecordsConcurrentWritersLoseNothing(t *testing.T) {
	f := newFleet(t)
	ctx := t.Context()
	first := f.proc()
	top, _ := image(t, first, "v1")
	base := f.clock.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for p := range 4 {
		c := f.proc()
		wg.Go(func() {
			for i := range 8 {
				at := base.Add(time.Duration(i*4+p) * time.Second)
				if err := c.RecordRoot(ctx, root(top, "r.example/shared:v1", at)); err != nil {
					errs <- err
				}
				if err := c.RecordRoot(ctx, root(top, fmt.Sprintf("r.example/own%d:v%d", p, i), at)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, ok, err := first.Root(ctx, "r.example/shared:v1")
	want := base.Add(31 * time.Second).UTC().Format(time.RFC3339Nano)
	if err != nil || !ok || got.Annotations[cache.AnnotationResolvedAt] != want {
		t.Fatalf("shared record = %v (%v, %v), want checked at %s", got.Annotations, ok, err, want)
	}
	im, err := first.Index(ctx)
	if err != nil || len(im.Manifests) != 33 {
		t.Fatalf("Index holds %d roots (%v), want 33", len(im.Manifests), err)
	}
}

// TestRecordOfMissingTop: a record is only written for a top the bucket
// holds, so that it never points to nothing.
func TestRecordOfMissingTop(t *testing.T) {
	f, c, top := withImage(t)
	top.Digest = digestOf([]byte("not stored"))
	err := c.RecordRoot(t.Context(), root(top, "r.example/app:v1", f.clock.Now()))
	if !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("RecordRoot of a top not in the bucket = %v, want ErrNotFound", err)
	}
	if keys := f.keys("buildcache/records/"); len(keys) != 0 {
		t.Fatalf("records written: %v", keys)
	}
}

// TestUpdateIndexPrunes: a resolver's Prune (UpdateIndex) deletes the
// records it drops and leaves the others.
func TestUpdateIndexPrunes(t *testing.T) {
	f, c, top := withImage(t)
	ctx := t.Context()
	for _, n := range []string{"a", "b", "c"} {
		if err := c.RecordRoot(ctx, root(top, "r.example/"+n+":v1", f.clock.Now())); err != nil {
			t.Fatal(err)
		}
	}
	err := c.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		im.Manifests = im.Manifests[:0:0]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys := f.keys("buildcache/records/"); len(keys) != 0 {
		t.Fatalf("records left after pruning all: %v", keys)
	}
}
