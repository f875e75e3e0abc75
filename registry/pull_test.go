package registry_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

// syncRecorder is a localfs store that logs the calls that decide
// durability: Put, PutDeferred, SyncBlobs and UpdateIndex or RecordRoot.
type syncRecorder struct {
	*localfs.Store
	mu  sync.Mutex
	log []string
}

func (s *syncRecorder) note(e string) {
	s.mu.Lock()
	s.log = append(s.log, e)
	s.mu.Unlock()
}

func (s *syncRecorder) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	s.note("put " + d.Hex)
	return s.Store.Put(ctx, d, size, r)
}

func (s *syncRecorder) PutDeferred(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	err := s.Store.PutDeferred(ctx, d, size, r)
	s.note("deferred " + d.Hex) // after: the blob is in place
	return err
}

func (s *syncRecorder) SyncBlobs(ctx context.Context) error {
	s.note("sync")
	return s.Store.SyncBlobs(ctx)
}

func (s *syncRecorder) UpdateIndex(ctx context.Context, fn func(*v1.IndexManifest) error) error {
	s.note("root")
	return s.Store.UpdateIndex(ctx, fn)
}

func (s *syncRecorder) RecordRoot(ctx context.Context, desc v1.Descriptor) error {
	s.note("root")
	return s.Store.RecordRoot(ctx, desc)
}

// A pull into a store that can defer syncs stores every blob deferred,
// syncs once after the last of them, and only then records the root.
func TestPullSyncsBlobsOnceBeforeTheRoot(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 4096))
	store := &syncRecorder{Store: openStore(t)}
	store.log = nil // opening the store wrote an empty index
	if _, err := newResolver(t, store).Resolve(t.Context(), ref, both); err != nil {
		t.Fatal(err)
	}
	// index + 2 manifests + 2 configs + 4 layers, then one sync, then the root.
	var deferred int
	for _, e := range store.log[:len(store.log)-2] {
		if !strings.HasPrefix(e, "deferred ") {
			t.Fatalf("pull log %q: %q before the sync", store.log, e)
		}
		deferred++
	}
	if deferred != 9 || !slices.Equal(store.log[len(store.log)-2:], []string{"sync", "root"}) {
		t.Fatalf("pull log %q: want 9 deferred puts, then sync, then root", store.log)
	}
}

// A store that cannot defer syncs gets plain Puts, each durable on its own.
func TestPullIntoAStoreWithoutDeferredSync(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 4096))
	store := &plainStore{LayerCache: openStore(t)}
	r := newResolver(t, store)
	if res, err := r.Resolve(t.Context(), ref, both); err != nil || res.Source != cache.Pulled {
		t.Fatalf("Resolve = %+v, %v", res, err)
	}
	if store.puts != 9 {
		t.Fatalf("%d Puts, want 9", store.puts)
	}
	if res, err := r.Resolve(t.Context(), ref, both, cache.WithPolicy(cache.PullIfNotPresent)); err != nil || res.Source != cache.Hit {
		t.Fatalf("second Resolve = %+v, %v; want a hit", res, err)
	}
}

// plainStore hides every method but the LayerCache ones.
type plainStore struct {
	cache.LayerCache
	mu   sync.Mutex
	puts int
}

func (s *plainStore) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	s.mu.Lock()
	s.puts++
	s.mu.Unlock()
	return s.LayerCache.Put(ctx, d, size, r)
}

// Large blobs download largest first, so the longest transfer starts at
// once; small ones (configs) go alongside and wait for none of them.
func TestBlobsDownloadLargestFirst(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	sizes := map[string]int64{} // digest hex -> size
	img := empty.Image
	for _, n := range []int64{2 << 20, 5 << 20, 3 << 20, 64 << 10} {
		l, err := random.Layer(n, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		size, _ := l.Size()
		sizes[d.Hex] = size
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	push(t, ref, idx)

	var mu sync.Mutex
	var large []int64
	reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if i := strings.Index(r.URL.Path, "/blobs/sha256:"); i >= 0 && r.Method == http.MethodGet {
			if size := sizes[r.URL.Path[i+len("/blobs/sha256:"):]]; size > 1<<20 {
				mu.Lock()
				large = append(large, size)
				mu.Unlock()
			}
		}
		return false
	})
	r := newResolver(t, openStore(t), registry.WithConcurrency(1))
	if _, err := r.Resolve(t.Context(), ref, cache.WithPlatforms("linux/amd64")); err != nil {
		t.Fatal(err)
	}
	if len(large) != 3 || !slices.IsSortedFunc(large, func(a, b int64) int { return int(b - a) }) {
		t.Fatalf("large blobs requested in the order of sizes %v, want largest first", large)
	}
}

// Two requested platforms that an index answers with one manifest fetch
// it once.
func TestPlatformsSharingAManifestFetchItOnce(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 4096))
	reg.reset()
	res, err := newResolver(t, openStore(t)).Resolve(t.Context(), ref, cache.WithPlatforms("linux/arm64", "linux/arm64/v8"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifests["linux/arm64"] != res.Manifests["linux/arm64/v8"] {
		t.Fatalf("manifests %v: want one for both names", res.Manifests)
	}
	if got := reg.count("GET manifests"); got != 2 {
		t.Fatalf("%d manifest GETs, want 2 (the index and the one arm64 manifest)", got)
	}
	if got := reg.count("GET blobs"); got != 3 {
		t.Fatalf("%d blob GETs, want 3", got)
	}
}
