package ocirepo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/ocirepo"
	"github.com/buildcache/buildcache/regclient"
)

// lcDiskBlobs is a blob store for go-containerregistry's in-process
// registry that keeps blobs in files and streams them, so that the 256 MiB
// conformance blob never sits in the test's heap (the default in-memory
// store would count against the suite's heap limit, and its upload
// buffering too), and so that a test can damage or remove a blob behind
// the cache's back. Unlike ggcr's own disk handler, Stat does not hash the
// file, which would make a corrupt blob look missing.
type lcDiskBlobs struct{ dir string }

func (b *lcDiskBlobs) path(h v1.Hash) string { return filepath.Join(b.dir, h.Algorithm, h.Hex) }

func (b *lcDiskBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	info, err := os.Stat(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return 0, ggcrregistry.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return info.Size(), nil
}

func (b *lcDiskBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ggcrregistry.ErrNotFound
	}
	return f, err
}

func (b *lcDiskBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(b.path(h)), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(b.dir, "upload-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rc) // rc verifies size and digest, and fails on a mismatch
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), b.path(h))
}

func (b *lcDiskBlobs) Delete(_ context.Context, _ string, h v1.Hash) error {
	if err := os.Remove(b.path(h)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (b *lcDiskBlobs) has(d v1.Hash) bool {
	_, err := os.Stat(b.path(d))
	return err == nil
}

func (b *lcDiskBlobs) remove(t *testing.T, d v1.Hash) {
	t.Helper()
	if err := os.Remove(b.path(d)); err != nil {
		t.Fatal(err)
	}
}

// corrupt damages a stored blob in place, as a failing storage backend
// would.
func (b *lcDiskBlobs) corrupt(t *testing.T, d v1.Hash, how cachetest.Corruption) {
	t.Helper()
	p := b.path(d)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	switch how {
	case cachetest.Truncate:
		data = data[:len(data)/2]
	case cachetest.FlipByte:
		data[len(data)/2] ^= 0x40
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// lcRegistry is go-containerregistry's in-process registry over
// lcDiskBlobs, behind a handler that counts requests and lets a test
// intercept them.
type lcRegistry struct {
	srv   *httptest.Server
	host  string
	blobs *lcDiskBlobs
	inner http.Handler

	mu     sync.Mutex
	counts map[string]int // "PUT index", "HEAD blobs", ...
	hook   func(w http.ResponseWriter, r *http.Request) bool
}

func lcNewRegistry(t *testing.T) *lcRegistry {
	t.Helper()
	reg := &lcRegistry{blobs: &lcDiskBlobs{dir: t.TempDir()}, counts: map[string]int{}}
	reg.inner = ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithBlobHandler(reg.blobs))
	reg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reg.mu.Lock()
		reg.counts[r.Method+" "+lcKind(r)]++
		hook := reg.hook
		reg.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		reg.inner.ServeHTTP(w, r)
	}))
	t.Cleanup(reg.srv.Close)
	reg.host = strings.TrimPrefix(reg.srv.URL, "http://")
	return reg
}

func lcKind(r *http.Request) string {
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/manifests/"+ocirepo.DefaultIndexTag):
		return "index"
	case strings.Contains(p, "/manifests/"):
		return "manifests"
	case strings.Contains(p, "/blobs/uploads"):
		return "uploads"
	case strings.Contains(p, "/blobs/"):
		return "blobs"
	}
	return "other"
}

func (reg *lcRegistry) repo(name string) string { return reg.host + "/" + name }

func (reg *lcRegistry) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	reg.mu.Lock()
	reg.hook = h
	reg.mu.Unlock()
}

func (reg *lcRegistry) count(k string) int {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return reg.counts[k]
}

// serveInner sends a request straight to the registry, past the hook.
func (reg *lcRegistry) serveInner(method, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if body != nil {
		req.Header.Set("Content-Type", string(types.OCIManifestSchema1))
	}
	rec := httptest.NewRecorder()
	reg.inner.ServeHTTP(rec, req)
	return rec
}

// current is the digest of the manifest at path ("" if there is none).
func (reg *lcRegistry) current(path string) string {
	rec := reg.serveInner(http.MethodHead, path, nil)
	if rec.Code != http.StatusOK {
		return ""
	}
	return rec.Header().Get("Docker-Content-Digest")
}

func lcIndexPath(repo string) string { return "/v2/" + repo + "/manifests/" + ocirepo.DefaultIndexTag }

// indexBody returns the index manifest of repo as the registry holds it.
func (reg *lcRegistry) indexBody(t *testing.T, repo string) []byte {
	t.Helper()
	rec := reg.serveInner(http.MethodGet, lcIndexPath(repo), nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET index: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

// setIndex writes body at repo's index tag, as another writer would.
func (reg *lcRegistry) setIndex(t *testing.T, repo string, body []byte) {
	t.Helper()
	if rec := reg.serveInner(http.MethodPut, lcIndexPath(repo), body); rec.Code != http.StatusCreated {
		t.Errorf("PUT index: %d %s", rec.Code, rec.Body)
	}
}

// lcFast keeps retries short: the tests' faults are deliberate.
var lcFast = regclient.WithRetry(3, time.Millisecond, 10*time.Millisecond)

// lcClient is a client that retries fast, with opts.
func lcClient(t *testing.T, opts ...regclient.Option) ocirepo.Option {
	t.Helper()
	c, err := regclient.New(append([]regclient.Option{lcFast}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return ocirepo.WithClient(c)
}

func lcNewCache(t *testing.T, repo string, opts ...ocirepo.Option) *ocirepo.Cache {
	t.Helper()
	c, err := ocirepo.New(repo, append([]ocirepo.Option{lcClient(t)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func lcPut(t *testing.T, c cache.LayerCache, b cachetest.Blob) {
	t.Helper()
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatalf("Put(%s): %v", b.Digest, err)
	}
}

func lcWalk(t *testing.T, c cache.LayerCache) map[v1.Hash]int64 {
	t.Helper()
	got := map[v1.Hash]int64{}
	if err := c.Walk(t.Context(), func(d v1.Hash, size int64) error {
		got[d] = size
		return nil
	}); err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return got
}

func lcSet(bs ...cachetest.Blob) map[v1.Hash]int64 {
	m := map[v1.Hash]int64{}
	for _, b := range bs {
		m[b.Digest] = int64(len(b.Data))
	}
	return m
}

func TestLayerCacheConformance(t *testing.T) {
	var mu sync.Mutex
	regs := map[cache.LayerCache]*lcRegistry{}
	cachetest.Run(t, func(t *testing.T) cache.LayerCache {
		reg := lcNewRegistry(t)
		c := lcNewCache(t, reg.repo("ci/cache"))
		mu.Lock()
		regs[c] = reg
		mu.Unlock()
		return c
	}, cachetest.WithCorrupter(func(t *testing.T, c cache.LayerCache, d v1.Hash, how cachetest.Corruption) {
		mu.Lock()
		reg := regs[c]
		mu.Unlock()
		reg.blobs.corrupt(t, d, how)
	}))
}

// Two runners of a CI fleet share one cache repository and Put different
// blobs at the same time: afterwards the index lists all of them.
func TestLayerCacheTwoRunnersLoseNoEntries(t *testing.T) {
	reg := lcNewRegistry(t)
	repo := reg.repo("ci/shared")
	runners := []*ocirepo.Cache{lcNewCache(t, repo), lcNewCache(t, repo)}
	const perRunner, workers = 24, 4
	blobs := make([][]cachetest.Blob, len(runners))
	want := map[v1.Hash]int64{}
	for r := range runners {
		for i := range perRunner {
			b := cachetest.NewBlob(uint64(1000*r+i), 1000+17*i)
			blobs[r] = append(blobs[r], b)
			want[b.Digest] = int64(len(b.Data))
		}
	}

	var wg sync.WaitGroup
	errc := make(chan error, len(runners)*perRunner)
	start := make(chan struct{})
	for r, c := range runners {
		for w := range workers {
			wg.Go(func() {
				<-start
				for i := w; i < perRunner; i += workers {
					b := blobs[r][i]
					if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
						errc <- fmt.Errorf("runner %d: Put(%s): %w", r, b.Digest, err)
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	t.Logf("%d Puts by 2 runners made %d index writes", len(want), reg.count("PUT index"))

	for i, c := range []*ocirepo.Cache{lcNewCache(t, repo), runners[0], runners[1]} {
		if diff := cmp.Diff(want, lcWalk(t, c)); diff != "" {
			t.Errorf("Walk by cache %d lists other blobs than the runners put (-want +got):\n%s", i, diff)
		}
	}
}

// A writer that read the index before this Put's write and writes it back
// after it drops this Put's entry; the read after the write notices, and
// the entry is merged in again.
func TestLayerCacheRestoresAnEntryAStaleWriteDropped(t *testing.T) {
	reg := lcNewRegistry(t)
	const repoName = "ci/shared"
	a, b := lcNewCache(t, reg.repo(repoName)), lcNewCache(t, reg.repo(repoName))
	a1, b1, a2 := cachetest.NewBlob(1, 100), cachetest.NewBlob(2, 200), cachetest.NewBlob(3, 300)
	lcPut(t, a, a1)
	lcPut(t, b, b1)
	stale := reg.indexBody(t, repoName) // what a slow writer read: {a1, b1}

	var fired atomic.Bool
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || lcKind(r) != "index" || !fired.CompareAndSwap(false, true) {
			return false
		}
		reg.inner.ServeHTTP(w, r)        // a's write lands...
		reg.setIndex(t, repoName, stale) // ...and the slow writer's lands on it
		return true
	})
	writes := reg.count("PUT index")
	lcPut(t, a, a2)
	if !fired.Load() {
		t.Fatal("the stale write was never made")
	}
	if n := reg.count("PUT index") - writes; n < 2 {
		t.Errorf("Put made %d index writes, want a second one to restore its entry", n)
	}
	if diff := cmp.Diff(lcSet(a1, b1, a2), lcWalk(t, lcNewCache(t, reg.repo(repoName)))); diff != "" {
		t.Errorf("index after the stale write (-want +got):\n%s", diff)
	}
}

// lcConditional makes the registry honour If-Match and If-None-Match on
// manifest PUTs, and send ETags, as a registry with compare-and-swap on
// tags would. before, if set, runs once before the next conditional PUT
// is judged: another writer's write landing just then.
type lcConditional struct {
	reg     *lcRegistry
	mu      sync.Mutex // judges and applies one PUT at a time
	before  func()
	refused atomic.Int32
}

func (c *lcConditional) hook(w http.ResponseWriter, r *http.Request) bool {
	if !strings.Contains(r.URL.Path, "/manifests/") {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if d := c.reg.current(r.URL.Path); d != "" {
			w.Header().Set("ETag", `"`+d+`"`)
		}
		return false
	case http.MethodPut:
		c.mu.Lock()
		defer c.mu.Unlock()
		ifMatch, ifNoneMatch := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
		if ifMatch == "" && ifNoneMatch == "" {
			return false
		}
		if c.before != nil {
			c.before()
			c.before = nil
		}
		cur := c.reg.current(r.URL.Path)
		if (ifNoneMatch == "*" && cur != "") || (ifMatch != "" && ifMatch != `"`+cur+`"`) {
			c.refused.Add(1)
			w.WriteHeader(http.StatusPreconditionFailed)
			return true
		}
		c.reg.inner.ServeHTTP(w, r)
		return true
	}
	return false
}

// On a registry that honours conditional requests, a write based on an
// old version of the index is refused and merged again: no settling wait
// is needed.
func TestLayerCacheConditionalWrite(t *testing.T) {
	reg := lcNewRegistry(t)
	cond := &lcConditional{reg: reg}
	reg.setHook(cond.hook)

	t.Run("tag moved", func(t *testing.T) {
		const repoName = "ci/moved"
		a := lcNewCache(t, reg.repo(repoName), ocirepo.WithIndexSettle(0))
		b := lcNewCache(t, reg.repo(repoName), ocirepo.WithIndexSettle(0))
		a1, b1, a2 := cachetest.NewBlob(11, 100), cachetest.NewBlob(12, 200), cachetest.NewBlob(13, 300)
		lcPut(t, a, a1)
		v1Body := reg.indexBody(t, repoName)
		lcPut(t, b, b1)
		v2Body := reg.indexBody(t, repoName)
		reg.setIndex(t, repoName, v1Body) // as if b had not written yet

		cond.mu.Lock()
		cond.before = func() { reg.setIndex(t, repoName, v2Body) } // b's write lands while a merges
		cond.mu.Unlock()
		refused := cond.refused.Load()
		lcPut(t, a, a2)
		if n := cond.refused.Load() - refused; n != 1 {
			t.Errorf("%d writes refused, want 1", n)
		}
		if diff := cmp.Diff(lcSet(a1, b1, a2), lcWalk(t, a)); diff != "" {
			t.Errorf("index (-want +got):\n%s", diff)
		}
	})

	t.Run("tag created", func(t *testing.T) {
		const repoName = "ci/created"
		a := lcNewCache(t, reg.repo(repoName), ocirepo.WithIndexSettle(0))
		b := lcNewCache(t, reg.repo("ci/elsewhere"), ocirepo.WithIndexSettle(0))
		a1, b1 := cachetest.NewBlob(21, 100), cachetest.NewBlob(22, 200)
		lcPut(t, b, b1)
		bBody := reg.indexBody(t, "ci/elsewhere") // {b1}; the blob store is shared

		cond.mu.Lock()
		cond.before = func() { reg.setIndex(t, repoName, bBody) } // another writer creates the tag first
		cond.mu.Unlock()
		refused := cond.refused.Load()
		lcPut(t, a, a1)
		if n := cond.refused.Load() - refused; n != 1 {
			t.Errorf("%d writes refused, want 1", n)
		}
		if diff := cmp.Diff(lcSet(a1, b1), lcWalk(t, a)); diff != "" {
			t.Errorf("index (-want +got):\n%s", diff)
		}
	})
}

// Concurrent Puts in one process share index writes.
func TestLayerCacheMergesConcurrentUpdates(t *testing.T) {
	reg := lcNewRegistry(t)
	c := lcNewCache(t, reg.repo("ci/cache"))
	var blobs []cachetest.Blob
	for i := range 32 {
		blobs = append(blobs, cachetest.NewBlob(uint64(100+i), 2000))
	}
	var wg sync.WaitGroup
	for _, b := range blobs {
		wg.Go(func() {
			if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n := reg.count("PUT index")
	t.Logf("32 concurrent Puts: %d index writes", n)
	if n > 16 {
		t.Errorf("32 concurrent Puts made %d index writes; queued updates are not merged", n)
	}
	if diff := cmp.Diff(lcSet(blobs...), lcWalk(t, c)); diff != "" {
		t.Errorf("index (-want +got):\n%s", diff)
	}
}

// A blob the index lists but the registry has lost is not found, and is
// dropped from the index.
func TestLayerCacheDropsBlobsGoneFromTheRegistry(t *testing.T) {
	for _, op := range []string{"Stat", "Get"} {
		t.Run(op, func(t *testing.T) {
			reg := lcNewRegistry(t)
			c := lcNewCache(t, reg.repo("ci/cache"))
			lost, kept := cachetest.NewBlob(31, 1000), cachetest.NewBlob(32, 1000)
			lcPut(t, c, lost)
			lcPut(t, c, kept)
			reg.blobs.remove(t, lost.Digest) // retention or GC in the registry

			var err error
			if op == "Stat" {
				_, err = c.Stat(t.Context(), lost.Digest)
			} else {
				var rc io.ReadCloser
				if rc, err = c.Get(t.Context(), lost.Digest); err == nil {
					rc.Close()
				}
			}
			if !errors.Is(err, cache.ErrNotFound) {
				t.Fatalf("%s of a lost blob = %v, want ErrNotFound", op, err)
			}
			if diff := cmp.Diff(lcSet(kept), lcWalk(t, c)); diff != "" {
				t.Errorf("index after %s (-want +got):\n%s", op, diff)
			}
			if s := c.Stats(); s.Evictions != 1 {
				t.Errorf("Stats().Evictions = %d, want 1", s.Evictions)
			}
		})
	}
}

func TestLayerCacheStatNoticesATruncatedBlob(t *testing.T) {
	reg := lcNewRegistry(t)
	c := lcNewCache(t, reg.repo("ci/cache"))
	b := cachetest.NewBlob(41, 5000)
	lcPut(t, c, b)
	reg.blobs.corrupt(t, b.Digest, cachetest.Truncate)
	_, err := c.Stat(t.Context(), b.Digest)
	if !errors.Is(err, cache.ErrNotFound) || !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("Stat of a truncated blob = %v, want ErrNotFound and ErrCorrupt", err)
	}
	if got := lcWalk(t, c); len(got) != 0 {
		t.Errorf("the truncated blob is still listed: %v", got)
	}
	if reg.blobs.has(b.Digest) {
		t.Error("the truncated blob is still in the registry")
	}
	if c.Stats().Corruptions != 1 {
		t.Errorf("Stats().Corruptions = %d, want 1", c.Stats().Corruptions)
	}
}

// lcValidating makes the registry check, as distribution does, that every
// blob a manifest names exists, answering MANIFEST_BLOB_UNKNOWN otherwise
// (with the digest in the detail, or without it).
func lcValidating(reg *lcRegistry, withDetail bool) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return true
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		m, err := v1.ParseManifest(bytes.NewReader(body))
		if err != nil {
			return false
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if reg.blobs.has(d.Digest) {
				continue
			}
			detail := ""
			if withDetail {
				detail = fmt.Sprintf(`,"detail":%q`, d.Digest)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"%s}]}`, detail)
			return true
		}
		return false
	}
}

// A registry that validates manifests refuses an index that lists a blob
// it has lost; the lost blob is dropped and the update goes through.
func TestLayerCacheIndexDropsBlobsAValidatingRegistryRefuses(t *testing.T) {
	for _, withDetail := range []bool{true, false} {
		t.Run(fmt.Sprintf("detail=%v", withDetail), func(t *testing.T) {
			reg := lcNewRegistry(t)
			reg.setHook(lcValidating(reg, withDetail))
			c := lcNewCache(t, reg.repo("ci/cache"))
			lost, kept, added := cachetest.NewBlob(51, 100), cachetest.NewBlob(52, 100), cachetest.NewBlob(53, 100)
			lcPut(t, c, lost)
			lcPut(t, c, kept)
			reg.blobs.remove(t, lost.Digest)
			lcPut(t, c, added)
			if diff := cmp.Diff(lcSet(kept, added), lcWalk(t, c)); diff != "" {
				t.Errorf("index (-want +got):\n%s", diff)
			}
			if s := c.Stats(); s.Evictions != 1 {
				t.Errorf("Stats().Evictions = %d, want 1", s.Evictions)
			}
		})
	}
}

// A tag that holds something else is never used or overwritten.
func TestLayerCacheRefusesAForeignTag(t *testing.T) {
	reg := lcNewRegistry(t)
	ref, err := name.ParseReference(reg.repo("app") + ":" + ocirepo.DefaultIndexTag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	before := reg.current(lcIndexPath("app"))

	c := lcNewCache(t, reg.repo("app"))
	b := cachetest.NewBlob(61, 100)
	err = c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data))
	if err == nil || !strings.Contains(err.Error(), "not a buildcache index") {
		t.Errorf("Put over an image's tag = %v, want a refusal", err)
	}
	if err := c.Walk(t.Context(), func(v1.Hash, int64) error { return nil }); err == nil {
		t.Error("Walk of an image's tag succeeded")
	}
	if after := reg.current(lcIndexPath("app")); after != before {
		t.Errorf("the image's tag moved from %s to %s", before, after)
	}
}

func TestLayerCacheIndexTag(t *testing.T) {
	reg := lcNewRegistry(t)
	a := lcNewCache(t, reg.repo("ci/cache"), ocirepo.WithIndexTag("team-a"))
	b := lcNewCache(t, reg.repo("ci/cache"), ocirepo.WithIndexTag("team-b"))
	blob := cachetest.NewBlob(71, 100)
	lcPut(t, a, blob)
	if got := lcWalk(t, b); len(got) != 0 {
		t.Errorf("the index at another tag lists %v", got)
	}
	if _, err := b.Stat(t.Context(), blob.Digest); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Stat through another tag = %v, want ErrNotFound", err)
	}
	if rec := reg.serveInner(http.MethodHead, "/v2/ci/cache/manifests/team-a", nil); rec.Code != http.StatusOK {
		t.Errorf("HEAD team-a = %d, want the index there", rec.Code)
	}
}

func TestLayerCacheBlobDelete(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint(on), func(t *testing.T) {
			reg := lcNewRegistry(t)
			c := lcNewCache(t, reg.repo("ci/cache"), ocirepo.WithBlobDelete(on))
			b := cachetest.NewBlob(81, 100)
			lcPut(t, c, b)
			if err := c.Delete(t.Context(), b.Digest); err != nil {
				t.Fatal(err)
			}
			if got := reg.blobs.has(b.Digest); got == on {
				t.Errorf("with blob delete %v, the registry has the blob: %v", on, got)
			}
		})
	}

	t.Run("unsupported", func(t *testing.T) {
		reg := lcNewRegistry(t)
		reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodDelete {
				return false
			}
			w.WriteHeader(http.StatusMethodNotAllowed)
			fmt.Fprint(w, `{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}`)
			return true
		})
		c := lcNewCache(t, reg.repo("ci/cache"))
		b := cachetest.NewBlob(82, 100)
		lcPut(t, c, b)
		if err := c.Delete(t.Context(), b.Digest); err != nil {
			t.Fatalf("Delete on a registry that refuses blob deletion = %v, want nil", err)
		}
		if _, err := c.Stat(t.Context(), b.Digest); !errors.Is(err, cache.ErrNotFound) {
			t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
		}
		lcPut(t, c, b) // and it can be put again
		if got := lcWalk(t, c); got[b.Digest] != 100 {
			t.Errorf("after a new Put, Walk = %v", got)
		}
	})
}

func TestLayerCacheAuth(t *testing.T) {
	reg := lcNewRegistry(t)
	var challenges atomic.Int32
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if u, p, ok := r.BasicAuth(); ok && u == "ci" && p == "s3cret" {
			return false
		}
		challenges.Add(1)
		w.Header().Set("WWW-Authenticate", `Basic realm="buildcache-test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	})
	b := cachetest.NewBlob(91, 1000)

	c := lcNewCache(t, reg.repo("ci/cache"), lcClient(t, regclient.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret"})))
	lcPut(t, c, b)
	rc, err := c.Get(t.Context(), b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, b.Data) {
		t.Fatalf("Get with credentials: %d bytes, %v", len(got), err)
	}
	// One unauthenticated request, and the ping that answers its challenge.
	if n := challenges.Load(); n > 2 {
		t.Errorf("%d requests were challenged; credentials are not kept", n)
	}

	anon := lcNewCache(t, reg.repo("ci/cache"), lcClient(t, regclient.WithKeychain(authn.NewMultiKeychain())))
	_, err = anon.Stat(t.Context(), b.Digest)
	var rerr *regclient.RemoteError
	if !errors.As(err, &rerr) || rerr.Status != http.StatusUnauthorized {
		t.Errorf("Stat without credentials = %v, want a RemoteError with status 401", err)
	}
	if s := anon.Stats(); s.Errors != 1 {
		t.Errorf("Stats().Errors = %d, want 1", s.Errors)
	}
}

func TestLayerCacheInsecure(t *testing.T) {
	reg := lcNewRegistry(t)
	// Every host name reaches the test registry.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, reg.host)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	b := cachetest.NewBlob(101, 100)

	c := lcNewCache(t, "cache.example.com:5000/ci/cache", lcClient(t, regclient.WithTransport(tr), regclient.WithInsecureRegistries("cache.example.com:5000")))
	lcPut(t, c, b)
	if got := lcWalk(t, c); got[b.Digest] != 100 {
		t.Errorf("Walk over plain HTTP = %v", got)
	}

	tls := lcNewCache(t, "cache.example.com:5000/ci/cache", lcClient(t, regclient.WithTransport(tr)))
	if _, err := tls.Stat(t.Context(), b.Digest); err == nil {
		t.Error("without WithInsecureRegistries, Stat spoke plain HTTP to cache.example.com")
	}
	if !c.Insecure() || tls.Insecure() || !lcNewCache(t, "localhost:5000/ci/cache").Insecure() {
		t.Errorf("Insecure() = %v, %v, %v for a registry named insecure, one not, loopback; want true, false, true",
			c.Insecure(), tls.Insecure(), lcNewCache(t, "localhost:5000/ci/cache").Insecure())
	}
}

// A Cache's Get streams the registry's body: a Read that gets
// nothing within the stall bound fails, as a timeout.
func TestLayerCacheGetOfAStalledBodyFails(t *testing.T) {
	reg := lcNewRegistry(t)
	c := lcNewCache(t, reg.repo("ci/cache"), lcClient(t, regclient.WithTimeouts(regclient.Timeouts{Stall: 200 * time.Millisecond})))
	b := cachetest.NewBlob(131, 1000)
	lcPut(t, c, b)
	released := make(chan struct{})
	t.Cleanup(func() { close(released) })
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || lcKind(r) != "blobs" {
			return false
		}
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.Write(b.Data[:10])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-released:
		}
		return true
	})
	rc, err := c.Get(t.Context(), b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(rc)
		done <- err
	}()
	select {
	case err := <-done:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("reading a stalled body: %v, want a timeout", err)
		}
	case <-time.After(30 * time.Second): // only a hang trips it
		t.Fatal("reading a stalled body has not returned")
	}
}

func TestLayerCacheRetriesAndReportsRemoteErrors(t *testing.T) {
	reg := lcNewRegistry(t)
	c := lcNewCache(t, reg.repo("ci/cache"))
	b := cachetest.NewBlob(111, 100)
	var failures atomic.Int32
	failures.Store(2)
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if failures.Add(-1) < 0 {
			return false
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	lcPut(t, c, b) // two 503s are retried

	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	_, err := c.Stat(t.Context(), b.Digest)
	var rerr *regclient.RemoteError
	if !errors.As(err, &rerr) || rerr.Status != http.StatusInternalServerError || !rerr.Temporary() {
		t.Fatalf("Stat against a failing registry = %v, want a temporary RemoteError with status 500", err)
	}
	if errors.Is(err, cache.ErrNotFound) {
		t.Error("a failing registry was reported as a miss")
	}
	if n := reg.count("HEAD index"); n < 3 {
		t.Errorf("the index was asked for %d times, want retries", n)
	}
}

func TestLayerCacheOptions(t *testing.T) {
	good := "localhost:5000/ci/cache"
	for _, tt := range []struct {
		name string
		repo string
		opts []ocirepo.Option
		want string // in the error
	}{
		{"nil client", good, []ocirepo.Option{ocirepo.WithClient(nil)}, "WithClient(nil)"},
		{"empty tag", good, []ocirepo.Option{ocirepo.WithIndexTag("")}, "not a valid tag"},
		{"tag with a slash", good, []ocirepo.Option{ocirepo.WithIndexTag("a/b")}, "not a valid tag"},
		{"long tag", good, []ocirepo.Option{ocirepo.WithIndexTag(strings.Repeat("a", 129))}, "not a valid tag"},
		{"negative settle", good, []ocirepo.Option{ocirepo.WithIndexSettle(-time.Second)}, "must not be negative"},
		{"bad repository", "Not/Lower/Case", nil, "invalid repository"},
		{"tag in repository", good + ":latest", nil, "invalid repository"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ocirepo.New(tt.repo, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error saying %q", err, tt.want)
			}
		})
	}
	if _, err := ocirepo.New(good, ocirepo.WithIndexTag("buildcache-v2.1_x"), ocirepo.WithIndexSettle(0)); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

// Nothing is asked of the registry for a malformed digest.
func TestLayerCacheInvalidDigestMakesNoRequest(t *testing.T) {
	reg := lcNewRegistry(t)
	c := lcNewCache(t, reg.repo("ci/cache"))
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		t.Errorf("request %s %s for an invalid digest", r.Method, r.URL.Path)
		return false
	})
	bad := v1.Hash{Algorithm: "sha256", Hex: "../../etc/passwd"}
	for op, err := range map[string]error{
		"Stat":   func() error { _, err := c.Stat(t.Context(), bad); return err }(),
		"Get":    func() error { _, err := c.Get(t.Context(), bad); return err }(),
		"Put":    c.Put(t.Context(), bad, 3, strings.NewReader("abc")),
		"Delete": c.Delete(t.Context(), bad),
	} {
		if !errors.Is(err, cache.ErrInvalidDigest) {
			t.Errorf("%s = %v, want ErrInvalidDigest", op, err)
		}
	}
}

// A registry that gives no answer is offline, as for every backend: each
// call fails with cache.ErrOffline and the *RemoteError in the chain.
func TestLayerCacheUnreachableIsOffline(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	c := lcNewCache(t, addr+"/ci/cache")
	b := cachetest.NewBlob(401, 100)
	check := func(op string, err error) {
		t.Helper()
		var re *regclient.RemoteError
		if !errors.Is(err, cache.ErrOffline) || !errors.As(err, &re) || re.Status != 0 {
			t.Errorf("%s on a closed port = %v; want cache.ErrOffline with a *RemoteError (no status) in the chain", op, err)
		}
	}
	_, err = c.Stat(t.Context(), b.Digest)
	check("Stat", err)
	rc, err := c.Get(t.Context(), b.Digest)
	if err == nil {
		rc.Close()
	}
	check("Get", err)
	check("Put", c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)))
	check("Walk", c.Walk(t.Context(), func(v1.Hash, int64) error { return nil }))
	check("Delete", c.Delete(t.Context(), b.Digest))
}
