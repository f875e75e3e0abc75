package registry_test

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

// fakeRegistry is go-containerregistry's in-process registry behind a
// handler that counts requests and can inject faults.
type fakeRegistry struct {
	srv  *httptest.Server
	host string

	mu     sync.Mutex
	counts map[string]int // "HEAD manifests", "GET blobs", ...
	fault  func(w http.ResponseWriter, r *http.Request) bool
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	f := &fakeRegistry{counts: map[string]int{}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		kind := "other"
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			kind = "manifests"
		case strings.Contains(r.URL.Path, "/blobs/"):
			kind = "blobs"
		}
		f.counts[r.Method+" "+kind]++
		fault := f.fault
		f.mu.Unlock()
		if fault != nil && fault(w, r) {
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	f.host = strings.TrimPrefix(f.srv.URL, "http://")
	return f
}

func (f *fakeRegistry) reset() {
	f.mu.Lock()
	f.counts = map[string]int{}
	f.mu.Unlock()
}

func (f *fakeRegistry) count(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[k]
}

func (f *fakeRegistry) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.counts {
		n += c
	}
	return n
}

func (f *fakeRegistry) setFault(fn func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

// twoPlatformIndex makes a linux/amd64 + linux/arm64 index; shared layers
// are added to both images.
// twoPlatformIndex is a random linux/amd64 + linux/arm64 index, two
// layers of layerSize per image, then the shared layers.
func twoPlatformIndex(t testing.TB, layerSize int64, shared ...v1.Layer) v1.ImageIndex {
	t.Helper()
	return testimage.ForTest(t).RandomIndex([]string{"linux/amd64", "linux/arm64"}, layerSize, 2, shared...)
}

func push(t *testing.T, ref string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	return testimage.ForTest(t).Push(ref, idx)
}

var both = cache.WithPlatforms("linux/amd64", "linux/arm64")

// fastRetry keeps retries short: the tests' faults are deliberate.
var fastRetry = regclient.WithRetry(3, time.Millisecond, 10*time.Millisecond)

// withClient is a client of its own for a resolver, retrying fast, with
// opts.
func withClient(t testing.TB, opts ...regclient.Option) registry.Option {
	t.Helper()
	c, err := regclient.New(append([]regclient.Option{fastRetry}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return registry.WithClient(c)
}

// newResolver is a resolver with a client of its own that retries fast;
// a WithClient in opts replaces it.
func newResolver(t *testing.T, store cache.LayerCache, opts ...registry.Option) *registry.Resolver {
	t.Helper()
	r, err := registry.NewResolver(store, append([]registry.Option{withClient(t)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func openStore(t *testing.T) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // before TempDir's removal: no counters flush races it
	return s
}

func TestResolveLifecycle(t *testing.T) {
	ctx := t.Context()
	reg := newFakeRegistry(t)
	ref := reg.host + "/library/base:1"
	shared, _ := random.Layer(4096, "application/vnd.oci.image.layer.v1.tar")
	d1 := push(t, ref, twoPlatformIndex(t, 2048, shared))
	store := openStore(t)
	r := newResolver(t, store)

	// Cold: everything is pulled, one GET per manifest and per blob.
	reg.reset()
	res, err := r.Resolve(ctx, ref, both)
	if err != nil {
		t.Fatal(err)
	}
	if res.Source != cache.Pulled || res.Digest != d1 || len(res.Manifests) != 2 {
		t.Fatalf("cold Resolve = %+v, want Pulled %s with 2 platforms", res, d1)
	}
	// index + 2 manifests; 2 configs + 2x2 own layers + 1 shared layer.
	if got := reg.count("GET manifests"); got != 3 {
		t.Errorf("cold: %d manifest GETs, want 3", got)
	}
	if got := reg.count("GET blobs"); got != 7 {
		t.Errorf("cold: %d blob GETs, want 7", got)
	}

	// Warm, PullAlways: exactly one HEAD and nothing else.
	reg.reset()
	res, err = r.Resolve(ctx, ref, both)
	if err != nil || res.Source != cache.Revalidated || res.Digest != d1 {
		t.Fatalf("warm Resolve = %+v, %v; want Revalidated", res, err)
	}
	if reg.count("HEAD manifests") != 1 || reg.total() != 1 {
		t.Errorf("warm PullAlways made %v, want exactly 1 HEAD", reg.counts)
	}

	// PullIfNotPresent and MaxAge: no request at all.
	reg.reset()
	if res, err = r.Resolve(ctx, ref, both, cache.WithPolicy(cache.PullIfNotPresent)); err != nil || res.Source != cache.Hit {
		t.Fatalf("PullIfNotPresent = %+v, %v; want Hit", res, err)
	}
	if res, err = r.Resolve(ctx, ref, both, cache.WithMaxAge(time.Hour)); err != nil || res.Source != cache.Hit {
		t.Fatalf("PullAlways within MaxAge = %+v, %v; want Hit", res, err)
	}
	if reg.total() != 0 {
		t.Errorf("Hits made %v requests, want none", reg.counts)
	}

	// The tag moves to an image sharing a layer: only new blobs are fetched.
	d2 := push(t, ref, twoPlatformIndex(t, 2048, shared))
	reg.reset()
	res, err = r.Resolve(ctx, ref, both)
	if err != nil || res.Source != cache.Pulled || res.Digest != d2 {
		t.Fatalf("after the tag moved: %+v, %v; want Pulled %s", res, err, d2)
	}
	if got := reg.count("GET blobs"); got != 6 {
		t.Errorf("after the tag moved: %d blob GETs, want 6 (the shared layer is cached)", got)
	}

	// The registry goes away: the cached copy is served as Stale.
	reg.srv.Close()
	res, err = r.Resolve(ctx, ref, both)
	if err != nil || res.Source != cache.Stale || res.Digest != d2 || res.RemoteErr == nil {
		t.Fatalf("registry down: %+v, %v; want Stale %s with RemoteErr", res, err, d2)
	}
	// And the image is served from the store with no network.
	img, err := r.Image(ctx, res, "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("image served from the store is invalid: %v", err)
	}
	// With stale-if-error off, the failure is an error.
	strict := newResolver(t, store, registry.WithStaleIfError(false))
	if _, err := strict.Resolve(ctx, ref, both); err == nil {
		t.Fatal("WithStaleIfError(false): Resolve succeeded with the registry down")
	}
	// A restart (new resolver, same store) still knows the image.
	again := newResolver(t, store)
	if res, err = again.Resolve(ctx, ref, both, cache.WithPolicy(cache.PullNever)); err != nil || res.Digest != d2 {
		t.Fatalf("after restart, PullNever = %+v, %v; want Hit %s", res, err, d2)
	}
	rep, err := store.Verify(ctx)
	if err != nil || len(rep.Bad) != 0 {
		t.Fatalf("store after the lifecycle: %+v, %v", rep, err)
	}
}

func TestPullNeverOffline(t *testing.T) {
	r := newResolver(t, openStore(t))
	_, err := r.Resolve(t.Context(), "127.0.0.1:1/nothing:here", cache.WithPolicy(cache.PullNever))
	if !errors.Is(err, cache.ErrOffline) {
		t.Fatalf("PullNever of an uncached image = %v, want ErrOffline", err)
	}
}

func TestInvalidReference(t *testing.T) {
	r := newResolver(t, openStore(t))
	for _, ref := range []string{"", "UPPER/case:tag", "a@sha256:../../etc/passwd", "bad tag:x y"} {
		if _, err := r.Resolve(t.Context(), ref); err == nil || !strings.Contains(err.Error(), "invalid image reference") {
			t.Errorf("Resolve(%q) = %v, want an invalid reference error", ref, err)
		}
	}
	if _, err := r.Resolve(t.Context(), "x:1", cache.WithPlatforms("linux")); err == nil {
		t.Error("an invalid platform was accepted")
	}
}

func TestDigestReferenceNeedsNoNetworkOnceLocal(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	d := push(t, ref, twoPlatformIndex(t, 1024))
	r := newResolver(t, openStore(t))
	pinned := reg.host + "/app@" + d.String()
	if _, err := r.Resolve(t.Context(), pinned, both); err != nil {
		t.Fatal(err)
	}
	reg.reset()
	res, err := r.Resolve(t.Context(), pinned, both) // PullAlways, yet no request
	if err != nil || res.Source != cache.Hit {
		t.Fatalf("pinned and local: %+v, %v; want Hit", res, err)
	}
	if reg.total() != 0 {
		t.Fatalf("a local digest reference made requests: %v", reg.counts)
	}
}

func TestConcurrentResolvesShareRequests(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 64<<10))
	r := newResolver(t, openStore(t))
	reg.reset()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 64 {
		wg.Go(func() {
			if _, err := r.Resolve(t.Context(), ref, both); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := reg.count("GET manifests"); got != 3 {
		t.Errorf("64 concurrent resolves: %d manifest GETs, want 3", got)
	}
	if got := reg.count("GET blobs"); got != 6 {
		t.Errorf("64 concurrent resolves: %d blob GETs, want 6", got)
	}
}

func TestRegistryFaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fault   func(calls *atomic.Int32) func(w http.ResponseWriter, r *http.Request) bool
		wantErr bool
		check   func(t *testing.T, err error)
	}{
		{
			name: "429 with Retry-After, then success",
			fault: func(calls *atomic.Int32) func(w http.ResponseWriter, r *http.Request) bool {
				return func(w http.ResponseWriter, r *http.Request) bool {
					if strings.Contains(r.URL.Path, "/blobs/") && calls.Add(1) <= 2 {
						w.Header().Set("Retry-After", "0") // the waits: regclient's TestRetryWaits
						w.WriteHeader(http.StatusTooManyRequests)
						return true
					}
					return false
				}
			},
		},
		{
			name: "500 on every blob",
			fault: func(*atomic.Int32) func(w http.ResponseWriter, r *http.Request) bool {
				return func(w http.ResponseWriter, r *http.Request) bool {
					if strings.Contains(r.URL.Path, "/blobs/") {
						w.WriteHeader(http.StatusInternalServerError)
						return true
					}
					return false
				}
			},
			wantErr: true,
			check: func(t *testing.T, err error) {
				var re *regclient.RemoteError
				if !errors.As(err, &re) || re.Status != 500 {
					t.Errorf("error %v is not a RemoteError with status 500", err)
				}
			},
		},
		{
			name: "a blob whose bytes do not match its digest",
			fault: func(*atomic.Int32) func(w http.ResponseWriter, r *http.Request) bool {
				return func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/") {
						w.Write([]byte(strings.Repeat("x", 100)))
						return true
					}
					return false
				}
			},
			wantErr: true,
			check: func(t *testing.T, err error) {
				if !errors.Is(err, cache.ErrDigestMismatch) {
					t.Errorf("error %v does not wrap ErrDigestMismatch", err)
				}
			},
		},
		{
			name: "a manifest that is not JSON",
			fault: func(*atomic.Int32) func(w http.ResponseWriter, r *http.Request) bool {
				return func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method == "GET" && strings.Contains(r.URL.Path, "/manifests/") {
						w.Write([]byte("<html>proxy error</html>"))
						return true
					}
					return false
				}
			},
			wantErr: true,
			check: func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), "not a JSON manifest") {
					t.Errorf("error %q does not say the manifest is not JSON", err)
				}
			},
		},
		{
			name: "connection cut mid-blob, once per blob",
			fault: func(calls *atomic.Int32) func(w http.ResponseWriter, r *http.Request) bool {
				var cut sync.Map
				return func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method != "GET" || !strings.Contains(r.URL.Path, "/blobs/") {
						return false
					}
					if _, done := cut.LoadOrStore(r.URL.Path, true); done {
						return false
					}
					w.Header().Set("Content-Length", "100000")
					w.WriteHeader(http.StatusOK)
					w.Write([]byte("partial"))
					panic(http.ErrAbortHandler) // drop the connection
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry(t)
			ref := reg.host + "/app:1"
			push(t, ref, twoPlatformIndex(t, 4096))
			var calls atomic.Int32
			reg.setFault(tc.fault(&calls))
			store := openStore(t)
			r := newResolver(t, store)
			res, err := r.Resolve(t.Context(), ref, both)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Resolve succeeded: %+v", res)
				}
				tc.check(t, err)
				im, _ := store.Index(t.Context())
				if len(im.Manifests) != 0 {
					t.Fatalf("a failed pull was recorded in index.json: %v", im.Manifests)
				}
			} else if err != nil || res.Source != cache.Pulled {
				t.Fatalf("Resolve = %+v, %v; want Pulled after retries", res, err)
			}
			rep, err := store.Verify(t.Context())
			if err != nil || len(rep.Bad) != 0 {
				t.Fatalf("store invalid after fault: %+v, %v", rep, err)
			}
		})
	}
}

func TestPruneDropsOldRoots(t *testing.T) {
	reg := newFakeRegistry(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := openStore(t)
	r := newResolver(t, store, registry.WithClock(clock))
	for i, tag := range []string{"old", "new"} {
		ref := fmt.Sprintf("%s/app:%s", reg.host, tag)
		push(t, ref, twoPlatformIndex(t, 512))
		if _, err := r.Resolve(t.Context(), ref, both); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			now = now.Add(48 * time.Hour)
		}
	}
	dropped, err := r.Prune(t.Context(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 1 || !strings.HasSuffix(dropped[0], ":old") {
		t.Fatalf("Prune dropped %v, want only app:old", dropped)
	}
	rep, err := store.GC(t.Context(), localfs.GCMaxBytes(1))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed == 0 {
		t.Fatal("GC reclaimed nothing after the old image was pruned")
	}
	if _, err := r.Resolve(t.Context(), reg.host+"/app:new", both, cache.WithPolicy(cache.PullNever)); err != nil {
		t.Fatalf("the kept image is not whole after GC: %v", err)
	}
}

func TestOnePlatformOfAnIndexLeavesAValidStore(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 1024))
	store := openStore(t)
	r := newResolver(t, store)
	reg.reset()
	res, err := r.Resolve(t.Context(), ref, cache.WithPlatforms("linux/arm64"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Manifests["linux/arm64"]; !ok || len(res.Manifests) != 1 {
		t.Fatalf("Manifests = %v, want only linux/arm64", res.Manifests)
	}
	if got := reg.count("GET blobs"); got != 3 { // one config, two layers
		t.Errorf("%d blob GETs for one platform, want 3", got)
	}
	rep, err := store.Verify(t.Context())
	if err != nil || len(rep.Bad) != 0 || len(rep.Missing) != 0 {
		t.Fatalf("Verify after a one-platform pull = %+v, %v; the other platform is not missing, just not asked for", rep, err)
	}
	// Asking for the other platform later fetches only that one.
	reg.reset()
	res, err = r.Resolve(t.Context(), ref, cache.WithPlatforms("linux/amd64"))
	if err != nil || res.Source != cache.Pulled {
		t.Fatalf("second platform: %+v, %v", res, err)
	}
	if got := reg.count("GET blobs"); got != 3 {
		t.Errorf("%d blob GETs for the second platform, want 3", got)
	}
}

func TestRevalidationTimeIsPersistedLazily(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 512))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := openStore(t)
	r := newResolver(t, store, registry.WithClock(clock))
	if _, err := r.Resolve(t.Context(), ref, both); err != nil {
		t.Fatal(err)
	}
	recorded := func() string {
		im, err := store.Index(t.Context())
		if err != nil || len(im.Manifests) != 1 {
			t.Fatalf("index: %v, %v", im, err)
		}
		return im.Manifests[0].Annotations[cache.AnnotationResolvedAt]
	}
	first := recorded()

	now = now.Add(30 * time.Second)
	if res, err := r.Resolve(t.Context(), ref, both); err != nil || res.Source != cache.Revalidated {
		t.Fatalf("%+v, %v", res, err)
	}
	if recorded() != first {
		t.Fatal("a revalidation within a minute of the recorded one rewrote index.json")
	}
	// MaxAge counts from the latest revalidation, even if not yet written.
	now = now.Add(30 * time.Second)
	reg.reset()
	if res, err := r.Resolve(t.Context(), ref, both, cache.WithMaxAge(40*time.Second)); err != nil || res.Source != cache.Hit {
		t.Fatalf("within MaxAge of the last revalidation: %+v, %v; want Hit", res, err)
	}
	if reg.total() != 0 {
		t.Fatalf("a fresh enough answer made requests: %v", reg.counts)
	}
	// Past the interval, the index is brought up to date.
	now = now.Add(2 * time.Minute)
	if _, err := r.Resolve(t.Context(), ref, both); err != nil {
		t.Fatal(err)
	}
	if recorded() == first {
		t.Fatal("the revalidation time was never persisted")
	}
}

func TestProgressAndBypass(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 8192))
	var mu sync.Mutex
	var last registry.Progress
	calls := 0
	r := newResolver(t, openStore(t), registry.WithProgress(func(p registry.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.BytesDone < last.BytesDone || p.BlobsDone < last.BlobsDone {
			t.Errorf("progress went backwards: %+v after %+v", p, last)
		}
		last = p
		calls++
	}))
	if _, err := r.Resolve(t.Context(), ref, both); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if calls == 0 || last.BlobsTotal != 6 || last.BlobsDone != 6 || last.BytesDone != last.BytesTotal || last.BytesTotal == 0 {
		t.Errorf("final progress %+v after %d reports, want 6/6 blobs and all bytes", last, calls)
	}
	mu.Unlock()

	// Bypass, per call: everything comes from the registry again.
	mu.Lock()
	last = registry.Progress{} // a new pull reports from zero
	mu.Unlock()
	reg.reset()
	res, err := r.Resolve(t.Context(), ref, both, cache.WithBypass())
	if err != nil || res.Source != cache.Pulled {
		t.Fatalf("bypass: %+v, %v; want Pulled", res, err)
	}
	if got := reg.count("GET blobs"); got != 6 {
		t.Errorf("bypass fetched %d blobs, want all 6", got)
	}
	// Every call that asks for it, on a fresh store too.
	fresh := newResolver(t, openStore(t))
	for range 2 {
		reg.reset()
		if res, err := fresh.Resolve(t.Context(), ref, both, cache.WithBypass()); err != nil || res.Source != cache.Pulled || reg.count("GET blobs") != 6 {
			t.Fatalf("bypass again: %+v, %v, %d blob GETs", res, err, reg.count("GET blobs"))
		}
	}
}

func TestRevalidatesWhenHEADHasNoDigest(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 512))
	r := newResolver(t, openStore(t))
	if _, err := r.Resolve(t.Context(), ref, both); err != nil {
		t.Fatal(err)
	}
	// A proxy that drops Docker-Content-Digest from HEAD answers.
	reg.setFault(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodHead {
			return false
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
		w.WriteHeader(http.StatusOK)
		return true
	})
	reg.reset()
	res, err := r.Resolve(t.Context(), ref, both)
	if err != nil || res.Source != cache.Revalidated {
		t.Fatalf("%+v, %v; want Revalidated through a GET", res, err)
	}
	if reg.count("HEAD manifests") != 1 || reg.count("GET manifests") != 1 || reg.count("GET blobs") != 0 {
		t.Fatalf("requests %v, want 1 HEAD and 1 manifest GET", reg.counts)
	}
}

func TestUnreachableAndUncachedIsOffline(t *testing.T) {
	r := newResolver(t, openStore(t))
	_, err := r.Resolve(t.Context(), "127.0.0.1:1/nothing:here")
	var re *regclient.RemoteError
	if !errors.Is(err, cache.ErrOffline) || !errors.As(err, &re) {
		t.Fatalf("unreachable registry, nothing cached = %v; want ErrOffline with the RemoteError in the chain", err)
	}
}

// Resolves that meet the same 401 at once share one login: one token
// request, however many requests were challenged. (The login answers
// the 401's challenge itself, so there is no /v2/ ping to count.)
func TestConcurrentChallengesShareOneLogin(t *testing.T) {
	a := newAuthDouble(t, true)
	ref := a.reg.host + "/app:1"
	a.reg.setFault(nil)
	push(t, ref, twoPlatformIndex(t, 256))
	platforms := [][]string{{"linux/amd64"}, {"linux/arm64"}, {"linux/amd64", "linux/arm64"}}
	var challenged, tokens atomic.Int32
	allChallenged := make(chan struct{})
	a.tokenHit = func() {
		tokens.Add(1)
		select { // answer the login only once every resolve is waiting for it
		case <-allChallenged:
		case <-time.After(10 * time.Second):
		}
	}
	a.reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/token" && r.Header.Get("Authorization") == "" && challenged.Add(1) == int32(len(platforms)) {
			close(allChallenged)
		}
		return a.serve(w, r)
	})
	r := newResolver(t, openStore(t), withClient(t, regclient.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret"})))
	var wg sync.WaitGroup
	for _, ps := range platforms {
		wg.Go(func() {
			if _, err := r.Resolve(t.Context(), ref, cache.WithPlatforms(ps...)); err != nil {
				t.Errorf("Resolve %v: %v", ps, err)
			}
		})
	}
	wg.Wait()
	if n := tokens.Load(); n != 1 {
		t.Errorf("%d logins (token requests) for %d challenged requests, want 1", n, challenged.Load())
	}
}
