package registry_test

import (
	"context"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// TestPullSurvivesGCWithAByteBudget: a collector with a budget of one byte
// runs, from another Store on the same directory, every time the pull
// asks the registry for a blob, that is, between the blobs the pull has
// stored and the root it records at its end. The pull's lease keeps its
// blobs, so the pull succeeds and the root it records is complete in the
// directory. The same holds through a tier whose near tier is the
// directory (what `buildcache serve --cache tier://...` and CI fleets
// use): there the far tier would still have the blobs, so only the
// directory's own check (Verify) can tell a lost lease.
func TestPullSurvivesGCWithAByteBudget(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T, near *localfs.Store) cache.LayerCache
	}{
		{"localfs", func(t *testing.T, near *localfs.Store) cache.LayerCache { return near }},
		{"tier(localfs,memory)", func(t *testing.T, near *localfs.Store) cache.LayerCache {
			far, err := memory.NewLayerCache()
			if err != nil {
				t.Fatal(err)
			}
			return newTier(t, near, far)
		}},
		{"tier(localfs,s3)", func(t *testing.T, near *localfs.Store) cache.LayerCache {
			srv := testserver.StartS3(t)
			far, err := s3.New(srv.Client(), srv.NewBucket(t), "far/")
			if err != nil {
				t.Fatal(err)
			}
			return newTier(t, near, far)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			near, err := localfs.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			pullSurvivesGC(t, dir, tc.store(t, near))
		})
	}
}

func newTier(t *testing.T, near, far cache.LayerCache) *tier.Cache {
	tc, err := tier.New(near, far)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return tc
}

// pullSurvivesGC pulls through store, whose local directory is dir, while
// a collector with a one-byte budget runs on dir before every blob.
func pullSurvivesGC(t *testing.T, dir string, store cache.LayerCache) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	// A layer shared with an image pulled before and then pruned: the
	// pull finds it stored, unreachable, and must keep it too.
	shared := twoPlatformIndex(t, 256)
	push(t, reg.host+"/old:1", shared)
	im, err := shared.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := shared.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	push(t, ref, twoPlatformIndex(t, 512, layers[0]))

	r := newResolver(t, store)
	if _, err := r.Resolve(t.Context(), reg.host+"/old:1", both); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Prune(t.Context(), 0); err != nil {
		t.Fatal(err)
	}

	collector, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var runs, removed int
	reg.setFault(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			mu.Lock()
			defer mu.Unlock()
			rep, err := collector.GC(context.Background(), localfs.GCMaxBytes(1))
			if err != nil {
				t.Errorf("GC during the pull: %v", err)
			}
			runs++
			removed += rep.Removed
		}
		return false
	})
	if _, err := r.Resolve(t.Context(), ref, both); err != nil {
		t.Fatalf("pull while GC collects: %v", err)
	}
	reg.setFault(nil)
	if runs == 0 {
		t.Fatal("GC never ran during the pull")
	}
	t.Logf("%d GC runs during the pull removed %d blobs (of the pruned image)", runs, removed)

	rep, err := collector.Verify(t.Context())
	if err != nil || len(rep.Missing) > 0 || len(rep.Bad) > 0 {
		t.Fatalf("Verify of %s after the pull: %d missing, %d bad (%+v), %v", dir, len(rep.Missing), len(rep.Bad), rep, err)
	}
	// The directory alone serves the image, with no network.
	res, err := newResolver(t, collector).Resolve(t.Context(), ref, both, cache.WithPolicy(cache.PullNever))
	if err != nil || res.Source != cache.Hit {
		t.Fatalf("the recorded image is not complete in %s: %+v, %v", dir, res, err)
	}
	// With the pull done, its lease is gone: only roots are kept now.
	gc, err := collector.GC(t.Context(), localfs.GCMaxBytes(1))
	if err != nil || gc.Leased != 0 {
		t.Fatalf("GC after the pull = %+v, %v; want no leased blob", gc, err)
	}
}

// readOnlyIndex is a store whose index cannot be written, as on a
// read-only mount.
type readOnlyIndex struct{ *localfs.Store }

func (s readOnlyIndex) UpdateIndex(context.Context, func(*v1.IndexManifest) error) error {
	return &fs.PathError{Op: "open", Path: "index.lock", Err: syscall.EROFS}
}

func (s readOnlyIndex) RecordRoot(context.Context, v1.Descriptor) error {
	return &fs.PathError{Op: "open", Path: "roots.journal", Err: syscall.EROFS}
}

// TestRevalidationOnAReadOnlyStore: a revalidation that changes nothing
// but the time succeeds on a store that cannot record it.
func TestRevalidationOnAReadOnlyStore(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 512))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := openStore(t)
	if _, err := newResolver(t, store, registry.WithClock(clock)).Resolve(t.Context(), ref, both); err != nil {
		t.Fatal(err)
	}

	now = now.Add(time.Hour) // past the interval at which a revalidation is written
	r := newResolver(t, readOnlyIndex{store}, registry.WithClock(clock))
	res, err := r.Resolve(t.Context(), ref, both)
	if err != nil || res.Source != cache.Revalidated {
		t.Fatalf("revalidation on a read-only store = %+v, %v; want Revalidated", res, err)
	}
	if n := r.Stats().RevalidationsUnrecorded; n != 1 {
		t.Errorf("RevalidationsUnrecorded = %d, want 1", n)
	}
	// The time is remembered in memory: MaxAge counts from it.
	reg.reset()
	now = now.Add(time.Second)
	if res, err := r.Resolve(t.Context(), ref, both, cache.WithMaxAge(time.Minute)); err != nil || res.Source != cache.Hit || reg.total() != 0 {
		t.Fatalf("within MaxAge of an unrecorded revalidation: %+v, %v, %d requests; want a Hit with none", res, err, reg.total())
	}
}
