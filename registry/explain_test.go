package registry_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/registry"
)

// Every path of Resolve explains itself.
func TestResolveExplainsEveryPath(t *testing.T) {
	ctx := t.Context()
	reg := newFakeRegistry(t)
	ref := reg.host + "/library/base:1"
	shared, _ := random.Layer(4096, "application/vnd.oci.image.layer.v1.tar")
	d1 := push(t, ref, twoPlatformIndex(t, 2048, shared))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	store := openStore(t)
	r := newResolver(t, store, registry.WithClock(clock))
	resolve := func(want cache.Source, opts ...cache.ResolveOption) cache.Explanation {
		t.Helper()
		res, err := r.Resolve(ctx, ref, append([]cache.ResolveOption{both}, opts...)...)
		if err != nil || res.Source != want {
			t.Fatalf("Resolve = %+v, %v; want %v", res, err, want)
		}
		t.Logf("%v: %+v", want, res.Why)
		return res.Why
	}

	// Not cached.
	w := resolve(cache.Pulled)
	if w.StoredDigest != (v1.Hash{}) || !w.LastChecked.IsZero() || w.Fetched != 10 || w.FetchedBytes <= 0 || !strings.Contains(w.Reason, "not in the cache") {
		t.Errorf("cold: %+v; want nothing stored, 10 fetched (3 manifests, 7 blobs)", w)
	}

	// Revalidated.
	advance(10 * time.Second)
	w = resolve(cache.Revalidated)
	if w.StoredDigest != d1 || w.RemoteDigest != d1 || w.Age != 10*time.Second || w.Fetched != 0 || w.Policy != cache.PullAlways || !strings.Contains(w.Reason, "HEAD") {
		t.Errorf("revalidated: %+v; want stored = remote = %s, age 10s", w, d1)
	}

	// Within max age.
	advance(20 * time.Second)
	w = resolve(cache.Hit, cache.WithMaxAge(time.Minute))
	if w.MaxAge != time.Minute || w.Age != 20*time.Second || w.RemoteDigest != (v1.Hash{}) || !strings.Contains(w.Reason, "within the max age") {
		t.Errorf("max-age hit: %+v; want age 20s against 1m, no remote digest", w)
	}

	// PullIfNotPresent and PullNever.
	w = resolve(cache.Hit, cache.WithPolicy(cache.PullIfNotPresent))
	if w.Policy != cache.PullIfNotPresent || w.StoredDigest != d1 || !strings.Contains(w.Reason, "if-not-present") {
		t.Errorf("if-not-present hit: %+v", w)
	}
	w = resolve(cache.Hit, cache.WithPolicy(cache.PullNever))
	if w.Policy != cache.PullNever || !strings.Contains(w.Reason, "never") {
		t.Errorf("never hit: %+v", w)
	}

	// The tag moves: only what is new is fetched.
	d2 := push(t, ref, twoPlatformIndex(t, 2048, shared))
	w = resolve(cache.Pulled)
	if w.StoredDigest != d1 || w.RemoteDigest != d2 || w.Fetched != 9 || !strings.Contains(w.Reason, "moved") {
		t.Errorf("moved: %+v; want %s -> %s, 9 fetched (3 manifests, 6 blobs)", w, d1, d2)
	}

	// A blob of the cached image goes missing.
	img := mustImage(t, reg, ref)
	layers, _ := img.Layers()
	lost, _ := layers[0].Digest()
	if err := store.Delete(ctx, lost); err != nil {
		t.Fatal(err)
	}
	w = resolve(cache.Pulled)
	if len(w.Missing) != 1 || w.Missing[0] != lost || w.Fetched != 2 || !strings.Contains(w.Reason, "lacks 1 blob in the store") {
		t.Errorf("missing: %+v; want %s missing and fetched again with the index (2 fetched)", w, lost)
	}

	// A digest reference.
	res, err := r.Resolve(ctx, reg.host+"/library/base@"+d2.String(), both)
	if err != nil || res.Source != cache.Hit || !strings.Contains(res.Why.Reason, "digest reference") {
		t.Errorf("digest reference: %+v, %v", res, err)
	}

	// Bypass.
	w = resolve(cache.Pulled, cache.WithBypass())
	if !w.Bypass || w.Fetched != 10 || !strings.Contains(w.Reason, "bypassed") {
		t.Errorf("bypass: %+v; want all 10 fetched", w)
	}

	// The registry fails: stale, with the error.
	reg.srv.Close()
	w = resolve(cache.Stale)
	if w.UpstreamError == "" || w.StoredDigest != d2 || w.RemoteDigest != (v1.Hash{}) || !strings.Contains(w.Reason, "stale") {
		t.Errorf("stale: %+v; want the upstream error", w)
	}
}

// mustImage is the linux/amd64 image of ref, from the registry.
func mustImage(t *testing.T, reg *fakeRegistry, ref string) v1.Image {
	t.Helper()
	r := newResolver(t, openStore(t))
	res, err := r.Resolve(t.Context(), ref, cache.WithPlatforms("linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := r.Image(t.Context(), res, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	return img
}
