package cachetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// The suites below check the optional capabilities of package cache on a
// store and on every composition built from it (a tier over it, what
// buildcache.Open returns): each finds the capability with cache.As, as
// callers do, so a wrapper that hides one fails them.

// RunRootIndex checks cache.RootIndex, and cache.RootLookup and
// cache.RootRecorder where the store offers them: roots recorded one at
// a time and by UpdateIndex are seen by both ways of reading, a name
// names one root, a failed update changes nothing, concurrent records
// are all kept, and what a caller gets is its own copy. newCache must
// return a new, empty store each time.
func RunRootIndex(t *testing.T, newCache func(t *testing.T) cache.LayerCache) {
	open := func(t *testing.T) (cache.LayerCache, rootAccess) {
		c := newCache(t)
		ri, ok := cache.As[cache.RootIndex](c)
		if !ok {
			t.Fatalf("%T: cache.As finds no cache.RootIndex", c)
		}
		ra := rootAccess{ri: ri}
		ra.rl, _ = cache.As[cache.RootLookup](c)
		ra.rr, _ = cache.As[cache.RootRecorder](c)
		return c, ra
	}
	t.Run("RecordAndLookup", func(t *testing.T) {
		c, ra := open(t)
		if got := ra.names(t); len(got) != 0 {
			t.Fatalf("a new store has roots %v", got)
		}
		b := NewBlob(101, 300)
		put(t, c, b)
		ra.record(t, "example.com/app:1", b)
		d, ok := ra.lookup(t, "example.com/app:1")
		if !ok || d.Digest != b.Digest || d.Size != int64(len(b.Data)) {
			t.Fatalf("root after recording it = %+v, %v; want %s", d, ok, b.Digest)
		}
		if _, ok := ra.lookup(t, "example.com/app:2"); ok {
			t.Fatal("a root that was never recorded was found")
		}
		if got := ra.names(t); len(got) != 1 || got[0] != "example.com/app:1" {
			t.Fatalf("Index names %v, want the one recorded root", got)
		}
	})
	t.Run("RecordReplaces", func(t *testing.T) {
		c, ra := open(t)
		a, b := NewBlob(102, 300), NewBlob(103, 300)
		put(t, c, a)
		put(t, c, b)
		ra.record(t, "example.com/app:1", a)
		ra.record(t, "example.com/app:1", b)
		if d, ok := ra.lookup(t, "example.com/app:1"); !ok || d.Digest != b.Digest {
			t.Fatalf("root after re-recording = %+v, %v; want %s", d, ok, b.Digest)
		}
		if got := ra.names(t); len(got) != 1 {
			t.Fatalf("Index names %v: one name, one root", got)
		}
	})
	t.Run("UpdateIndexIsSeen", func(t *testing.T) {
		c, ra := open(t)
		a, b := NewBlob(104, 300), NewBlob(105, 300)
		put(t, c, a)
		put(t, c, b)
		ra.record(t, "example.com/a:1", a)
		err := ra.ri.UpdateIndex(ctxT(t), func(im *v1.IndexManifest) error {
			im.Manifests = []v1.Descriptor{rootDesc("example.com/b:1", b)}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ra.lookup(t, "example.com/a:1"); ok {
			t.Error("a root UpdateIndex removed is still found")
		}
		if d, ok := ra.lookup(t, "example.com/b:1"); !ok || d.Digest != b.Digest {
			t.Errorf("a root UpdateIndex added = %+v, %v", d, ok)
		}
	})
	t.Run("FailedUpdateChangesNothing", func(t *testing.T) {
		c, ra := open(t)
		a := NewBlob(106, 300)
		put(t, c, a)
		ra.record(t, "example.com/a:1", a)
		boom := errors.New("update refused by the test")
		err := ra.ri.UpdateIndex(ctxT(t), func(im *v1.IndexManifest) error {
			im.Manifests = nil
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("UpdateIndex = %v, want the function's error", err)
		}
		if d, ok := ra.lookup(t, "example.com/a:1"); !ok || d.Digest != a.Digest {
			t.Fatalf("root after a failed update = %+v, %v; want it unchanged", d, ok)
		}
	})
	t.Run("ConcurrentRecords", func(t *testing.T) {
		c, ra := open(t)
		const n = 32
		b := NewBlob(107, 300)
		put(t, c, b)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() { errs <- ra.recordErr(ctxT(t), fmt.Sprintf("example.com/app:%d", i), b) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			if _, ok := ra.lookup(t, fmt.Sprintf("example.com/app:%d", i)); !ok {
				t.Errorf("root %d of %d concurrent records is lost", i, n)
			}
		}
		if got := ra.names(t); len(got) != n {
			t.Errorf("Index has %d roots, want %d", len(got), n)
		}
	})
	t.Run("CallersCopy", func(t *testing.T) {
		c, ra := open(t)
		b := NewBlob(108, 300)
		put(t, c, b)
		ra.record(t, "example.com/app:1", b)
		d, _ := ra.lookup(t, "example.com/app:1")
		d.Annotations[cache.AnnotationRefName] = "changed by the caller"
		im, err := ra.ri.Index(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for i := range im.Manifests {
			im.Manifests[i].Annotations[cache.AnnotationRefName] = "changed by the caller"
		}
		if _, ok := ra.lookup(t, "example.com/app:1"); !ok {
			t.Fatal("changing a returned descriptor changed the stored root")
		}
	})
}

// rootAccess reads and writes roots the way a resolver does: one lookup
// and one record where the store offers them.
type rootAccess struct {
	ri cache.RootIndex
	rl cache.RootLookup
	rr cache.RootRecorder
}

func rootDesc(name string, b Blob) v1.Descriptor {
	return v1.Descriptor{
		MediaType: "application/vnd.oci.image.index.v1+json", Digest: b.Digest, Size: int64(len(b.Data)),
		Annotations: map[string]string{cache.AnnotationRefName: name, cache.AnnotationResolvedAt: "2026-01-01T00:00:00Z"},
	}
}

func (ra rootAccess) recordErr(ctx context.Context, name string, b Blob) error {
	desc := rootDesc(name, b)
	if ra.rr != nil {
		return ra.rr.RecordRoot(ctx, desc)
	}
	return ra.ri.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		out := im.Manifests[:0]
		for _, d := range im.Manifests {
			if d.Annotations[cache.AnnotationRefName] != name {
				out = append(out, d)
			}
		}
		im.Manifests = append(out, desc)
		return nil
	})
}

func (ra rootAccess) record(t *testing.T, name string, b Blob) {
	t.Helper()
	if err := ra.recordErr(ctxT(t), name, b); err != nil {
		t.Fatalf("recording root %s: %v", name, err)
	}
}

// lookup finds a root both ways, and fails the test when they disagree.
func (ra rootAccess) lookup(t *testing.T, name string) (v1.Descriptor, bool) {
	t.Helper()
	im, err := ra.ri.Index(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var scanned v1.Descriptor
	found := false
	for _, d := range im.Manifests {
		if d.Annotations[cache.AnnotationRefName] == name {
			scanned, found = d, true
		}
	}
	if ra.rl == nil {
		return scanned, found
	}
	d, ok, err := ra.rl.Root(ctxT(t), name)
	if err != nil {
		t.Fatalf("Root(%s): %v", name, err)
	}
	if ok != found || d.Digest != scanned.Digest {
		t.Fatalf("Root(%s) = %s, %v but Index has %s, %v", name, d.Digest, ok, scanned.Digest, found)
	}
	return d, ok
}

func (ra rootAccess) names(t *testing.T) []string {
	t.Helper()
	im, err := ra.ri.Index(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range im.Manifests {
		out = append(out, d.Annotations[cache.AnnotationRefName])
	}
	return out
}

// LeaseHarness is a store whose collector RunLeaser can run.
type LeaseHarness struct {
	// Cache is the store (or a composition over it) that leases.
	Cache cache.LayerCache
	// Collect removes every blob that no root and no live lease keeps, as
	// the store's most eager collector would (localfs: GC with a one-byte
	// budget, from another Store on the same directory).
	Collect func(ctx context.Context) error
	// Holds reports whether the collected store still has d (for a tier:
	// the near tier, which the collector works on).
	Holds func(ctx context.Context, d v1.Hash) bool
}

// RunLeaser checks cache.Leaser: what a job in progress puts, stats or
// gets under its lease is kept by the store's collector until the lease
// is released, and collected afterwards; a blob under no lease is
// collected (so the harness's collector is real); releasing twice is
// harmless; a cancelled context leases nothing. newHarness must return a
// new, empty store each time.
func RunLeaser(t *testing.T, newHarness func(t *testing.T) LeaseHarness) {
	open := func(t *testing.T) (LeaseHarness, cache.Leaser) {
		h := newHarness(t)
		l, ok := cache.As[cache.Leaser](h.Cache)
		if !ok {
			t.Fatalf("%T: cache.As finds no cache.Leaser", h.Cache)
		}
		return h, l
	}
	collect := func(t *testing.T, h LeaseHarness) {
		t.Helper()
		if err := h.Collect(ctxT(t)); err != nil {
			t.Fatalf("collector: %v", err)
		}
	}
	t.Run("UnleasedIsCollected", func(t *testing.T) {
		h, _ := open(t)
		b := NewBlob(201, 1000)
		put(t, h.Cache, b)
		if !h.Holds(ctxT(t), b.Digest) {
			t.Fatal("the store does not hold a blob just put")
		}
		collect(t, h)
		if h.Holds(ctxT(t), b.Digest) {
			t.Fatal("the collector kept a blob no root or lease keeps: it collects nothing this suite can check")
		}
	})
	for _, tc := range []struct {
		name  string
		touch func(ctx context.Context, c cache.LayerCache, b Blob) error
		pre   bool // the blob is stored before the lease
	}{
		{"PutKeeps", func(ctx context.Context, c cache.LayerCache, b Blob) error {
			return c.Put(ctx, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data))
		}, false},
		{"StatKeeps", func(ctx context.Context, c cache.LayerCache, b Blob) error {
			_, err := c.Stat(ctx, b.Digest)
			return err
		}, true},
		{"GetKeeps", func(ctx context.Context, c cache.LayerCache, b Blob) error {
			rc, err := c.Get(ctx, b.Digest)
			if err != nil {
				return err
			}
			return rc.Close()
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, l := open(t)
			b := NewBlob(202, 1000)
			if tc.pre {
				put(t, h.Cache, b)
			}
			leased, release, err := l.Lease(ctxT(t))
			if err != nil {
				t.Fatalf("Lease: %v", err)
			}
			if err := tc.touch(leased, h.Cache, b); err != nil {
				t.Fatal(err)
			}
			collect(t, h)
			if !h.Holds(ctxT(t), b.Digest) {
				t.Fatal("the collector removed a blob a live lease names")
			}
			if err := release(); err != nil {
				t.Fatalf("release: %v", err)
			}
			if err := release(); err != nil {
				t.Fatalf("a second release: %v", err)
			}
			collect(t, h)
			if h.Holds(ctxT(t), b.Digest) {
				t.Fatal("a released lease still keeps its blob")
			}
		})
	}
	t.Run("CancelledContext", func(t *testing.T) {
		_, l := open(t)
		ctx, cancel := context.WithCancel(ctxT(t))
		cancel()
		if _, _, err := l.Lease(ctx); err == nil {
			t.Fatal("Lease with a cancelled context succeeded")
		}
	})
}

// RunDeferredSync checks cache.DeferredSyncer: blobs put with
// PutDeferred, concurrently, are served after SyncBlobs; PutDeferred
// verifies as Put does (wrong bytes, a malformed digest store nothing).
func RunDeferredSync(t *testing.T, newCache func(t *testing.T) cache.LayerCache) {
	open := func(t *testing.T) (cache.LayerCache, cache.DeferredSyncer) {
		return openAs[cache.DeferredSyncer](t, newCache)
	}
	t.Run("RoundTrip", func(t *testing.T) {
		c, ds := open(t)
		blobs := make([]Blob, 16)
		var wg sync.WaitGroup
		errs := make(chan error, len(blobs))
		for i := range blobs {
			blobs[i] = NewBlob(uint64(301+i), 2000+i)
			wg.Go(func() {
				b := blobs[i]
				errs <- ds.PutDeferred(ctxT(t), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data))
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("PutDeferred: %v", err)
			}
		}
		if err := ds.SyncBlobs(ctxT(t)); err != nil {
			t.Fatalf("SyncBlobs: %v", err)
		}
		for _, b := range blobs {
			if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
				t.Fatalf("%s read back differs", b.Digest)
			}
		}
	})
	t.Run("Verified", func(t *testing.T) {
		c, ds := open(t)
		b, other := NewBlob(320, 1000), NewBlob(321, 1000)
		err := ds.PutDeferred(ctxT(t), b.Digest, int64(len(b.Data)), bytes.NewReader(other.Data))
		if !errors.Is(err, cache.ErrDigestMismatch) {
			t.Fatalf("PutDeferred of wrong bytes = %v, want ErrDigestMismatch", err)
		}
		for _, bad := range InvalidDigests[:3] {
			err := ds.PutDeferred(ctxT(t), bad, 1, bytes.NewReader([]byte{0}))
			if !errors.Is(err, cache.ErrInvalidDigest) {
				t.Fatalf("PutDeferred(%q) = %v, want ErrInvalidDigest", bad, err)
			}
		}
		if err := ds.SyncBlobs(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		expectAbsent(t, c, b.Digest)
	})
}

// RunNoSpace checks a store's byte budget: newCache returns a new, empty
// store that holds at most budget bytes of blobs. A blob that cannot fit
// even in an empty store fails with ErrNoSpace and is not stored; the
// blobs already stored stay readable; a blob that fits is stored. The
// same holds for an ingestion when the store is a cache.Ingester.
func RunNoSpace(t *testing.T, newCache func(t *testing.T, budget int64) cache.LayerCache) {
	const budget = 64 << 10
	c := newCache(t, budget)
	small := NewBlob(401, 16<<10)
	put(t, c, small)
	big := NewBlob(402, 2*budget)
	err := c.Put(ctxT(t), big.Digest, int64(len(big.Data)), bytes.NewReader(big.Data))
	if !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("Put of %d bytes into a %d-byte budget = %v, want ErrNoSpace", len(big.Data), budget, err)
	}
	expectAbsent(t, c, big.Digest)
	if got := mustGet(t, c, small.Digest); !bytes.Equal(got, small.Data) {
		t.Fatal("a blob stored before a Put that did not fit reads back wrong")
	}
	// Size unknown to Put (-1): the budget is found out while writing.
	err = c.Put(ctxT(t), big.Digest, -1, bytes.NewReader(big.Data))
	if !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("Put of %d bytes of unstated size into a %d-byte budget = %v, want ErrNoSpace", len(big.Data), budget, err)
	}
	expectAbsent(t, c, big.Digest)
	if ing, ok := cache.As[cache.Ingester](c); ok {
		if in, err := ing.Ingest(ctxT(t), big.Digest, int64(len(big.Data))); !errors.Is(err, cache.ErrNoSpace) {
			if err == nil {
				in.Close()
			}
			t.Fatalf("Ingest of %d bytes into a %d-byte budget = %v, want ErrNoSpace", len(big.Data), budget, err)
		}
		in, err := ing.Ingest(ctxT(t), big.Digest, -1)
		if err != nil {
			t.Fatalf("Ingest of unstated size: %v", err)
		}
		_, werr := in.Write(big.Data)
		cerr := in.Commit(ctxT(t))
		in.Close()
		if !errors.Is(werr, cache.ErrNoSpace) && !errors.Is(cerr, cache.ErrNoSpace) {
			t.Fatalf("Ingest of %d bytes of unstated size into a %d-byte budget: Write = %v, Commit = %v; want ErrNoSpace", len(big.Data), budget, werr, cerr)
		}
		expectAbsent(t, c, big.Digest)
	}
	other := NewBlob(403, 16<<10)
	put(t, c, other)
}

// openAs returns a new store of newCache and the capability T that
// cache.As finds in it, failing the test if it finds none.
func openAs[T any](t *testing.T, newCache func(t *testing.T) cache.LayerCache) (cache.LayerCache, T) {
	t.Helper()
	c := newCache(t)
	capability, ok := cache.As[T](c)
	if !ok {
		t.Fatalf("%T: cache.As finds no %T", c, (*T)(nil))
	}
	return c, capability
}
