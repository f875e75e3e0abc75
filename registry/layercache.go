package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/ctxio"
	"github.com/buildcache/buildcache/internal/flight"
	"github.com/buildcache/buildcache/internal/verify"
)

const (
	// DefaultIndexTag is the tag at which a LayerCache keeps its index.
	DefaultIndexTag = "buildcache-index"

	// IndexArtifactType is the artifactType of the index manifest. A tag
	// holding a manifest of another type is never overwritten.
	IndexArtifactType = "application/vnd.buildcache.layercache.v1"

	// BlobMediaType is the media type the index gives each cached blob. It
	// is ORAS's default for arbitrary files, which registries accept in
	// artifact manifests; the blobs themselves may be anything.
	BlobMediaType = types.OCIUncompressedLayer

	// maxIndexBytes is the largest index a LayerCache writes or reads:
	// registries refuse manifests over 4 MiB, which is about 25,000 entries.
	maxIndexBytes = 4 << 20

	// maxIndexAttempts bounds the read-modify-write rounds of one index
	// update before it gives up with errIndexContention.
	maxIndexAttempts = 10

	// maxSettle caps the wait before an index write is verified.
	maxSettle = 2 * time.Second
)

// emptyJSON is the OCI empty descriptor ("{}"): the index's config, and its
// only layer when no blob is cached (registries want at least one layer).
var emptyJSON = func() v1.Descriptor {
	sum := sha256.Sum256([]byte("{}"))
	return v1.Descriptor{
		MediaType: types.OCIEmptyJSON,
		Size:      2,
		Digest:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])},
		Data:      []byte("{}"),
	}
}()

// errIndexContention: an index update kept losing to other writers.
var errIndexContention = errors.New("the index kept changing under this update")

// LayerCache is a cache.LayerCache whose blobs live in a registry
// repository: the shared tier of a CI fleet, as BuildKit's type=registry
// cache is, in Harbor, distribution or any OCI registry. It is safe for
// concurrent use, and any number of LayerCaches, in any number of
// processes, may share one repository.
//
// # The index
//
// A registry cannot list the blobs of a repository, so the set of cached
// blobs is kept in an index: an OCI artifact manifest (artifactType
// IndexArtifactType, media type BlobMediaType for each blob) tagged
// DefaultIndexTag, or what WithIndexTag says. Put uploads the blob and
// then adds it to the index; Delete removes it from the index and then
// asks the registry to delete the blob, tolerating registries that do not
// allow that; Walk lists the index; Stat is membership in the index and a
// HEAD of the blob. A blob listed in the index but gone from the registry
// (retention, garbage collection) is reported as cache.ErrNotFound and is
// dropped from the index.
//
// Each index write makes a new manifest revision; the old ones become
// untagged and are left to the registry's garbage collection (Harbor:
// "untagged artifacts"). The index holds about 25,000 blobs before it
// reaches the registries' 4 MiB manifest limit; a Put beyond that fails
// with cache.ErrNoSpace.
//
// # Concurrent writers
//
// Registries have no compare-and-swap on tags, so index updates are
// read-modify-write, protected as well as the distribution API allows:
//
//   - Within one LayerCache, updates are serialised, and those that arrive
//     while one is being written are merged into the next write.
//   - The write is conditional (If-Match with the ETag the registry gave
//     for the version read, If-None-Match: * for a new tag). A registry that
//     honours this answers 412 to a write that would lose an update, and
//     the update is merged again. Distribution, Harbor and
//     go-containerregistry's registry ignore these headers.
//   - After a write, and a settling wait (WithIndexSettle), the index is
//     read again; if another writer's stale write has dropped this
//     update's entries, they are merged in again, up to 10 rounds.
//
// What is not guaranteed, on registries that ignore If-Match: a writer
// that read the index before this write and writes it back more than the
// settling wait after it drops this write's entries unnoticed. The worst
// outcome of such a race is a cache miss — the blob stays in the registry
// and the next Put of it is recorded again — never a wrong blob: every Get
// is verified. Likewise a Delete racing with another process's Put of the
// same blob may leave an entry whose blob is gone, which the next Stat or
// Get finds and drops.
//
// # Integrity
//
// Put hashes the bytes while uploading them and fails with
// cache.ErrDigestMismatch, recording nothing, when they do not match; the
// registry also checks the digest before it commits an upload. Get
// verifies while streaming: a mismatch fails the read with
// cache.ErrCorrupt and removes the entry (and, unless disabled, the blob).
// A Put whose context ends before the upload is committed records nothing;
// one whose context ends while its index update is under way returns the
// context's error, and the update may still take effect.
type LayerCache struct {
	repo   name.Repository
	tag    name.Tag
	o      layerCacheOptions
	client *lcClient
	stats  cache.Counters

	locks    digestLocks // one Put, Delete or drop per digest at a time
	configOK atomic.Bool // the empty config blob is known to be in the repository
	loads    flight.Group[v1.Hash, *indexState]

	snapMu sync.Mutex
	snap   *indexState // the newest index this LayerCache has read or written

	qmu      sync.Mutex
	queue    []*indexEdit // edits waiting for the next index write
	flushing bool         // a goroutine is writing the index
}

var (
	_ cache.LayerCache    = (*LayerCache)(nil)
	_ cache.StatsReporter = (*LayerCache)(nil)
)

// LayerCacheOption configures a LayerCache.
type LayerCacheOption func(*layerCacheOptions) error

type layerCacheOptions struct {
	keychain    authn.Keychain
	keychainSet bool
	auth        authn.Authenticator
	transport   http.RoundTripper
	insecure    bool
	tag         string
	retry       retryPolicy
	blobDelete  bool
	settle      time.Duration
	userAgent   string
}

// WithLayerCacheKeychain resolves the repository's credentials from k
// (default authn.DefaultKeychain: Docker's config.json and credential
// helpers). It conflicts with WithLayerCacheAuth.
func WithLayerCacheKeychain(k authn.Keychain) LayerCacheOption {
	return func(o *layerCacheOptions) error {
		if k == nil {
			return errors.New("registry: WithLayerCacheKeychain(nil)")
		}
		o.keychain, o.keychainSet = k, true
		return nil
	}
}

// WithLayerCacheAuth uses a for the repository instead of a keychain
// (default: none, the keychain decides). It conflicts with
// WithLayerCacheKeychain.
func WithLayerCacheAuth(a authn.Authenticator) LayerCacheOption {
	return func(o *layerCacheOptions) error {
		if a == nil {
			return errors.New("registry: WithLayerCacheAuth(nil)")
		}
		o.auth = a
		return nil
	}
}

// WithLayerCacheTransport sets the HTTP transport (default
// remote.DefaultTransport).
func WithLayerCacheTransport(t http.RoundTripper) LayerCacheOption {
	return func(o *layerCacheOptions) error {
		if t == nil {
			return errors.New("registry: WithLayerCacheTransport(nil)")
		}
		o.transport = t
		return nil
	}
}

// WithLayerCacheInsecure talks plain HTTP to the registry (default: HTTPS,
// except for localhost, 127.0.0.1 and private addresses, which use plain
// HTTP already).
func WithLayerCacheInsecure() LayerCacheOption {
	return func(o *layerCacheOptions) error {
		o.insecure = true
		return nil
	}
}

// WithIndexTag keeps the index at this tag of the repository (default
// DefaultIndexTag, "buildcache-index"). LayerCaches with different tags on
// one repository are separate caches that share blob storage.
func WithIndexTag(tag string) LayerCacheOption {
	return func(o *layerCacheOptions) error {
		if _, err := name.NewTag("example.com/repo:" + tag); err != nil || tag == "" {
			return fmt.Errorf("registry: WithIndexTag(%q): not a valid tag", tag)
		}
		o.tag = tag
		return nil
	}
}

// WithLayerCacheRetry sets how often a request is tried on 429, 5xx and
// connection failures (default 4 attempts), the first backoff (default
// 200ms, then doubling) and the longest single wait, Retry-After included
// (default 10s). A blob upload is never retried: its body is a stream.
func WithLayerCacheRetry(attempts int, backoff, maxWait time.Duration) LayerCacheOption {
	return func(o *layerCacheOptions) error {
		if attempts < 1 || backoff < 0 || maxWait < 0 {
			return fmt.Errorf("registry: WithLayerCacheRetry(%d, %v, %v): need attempts >= 1 and non-negative waits", attempts, backoff, maxWait)
		}
		o.retry.attempts, o.retry.backoff, o.retry.maxWait = attempts, backoff, maxWait
		return nil
	}
}

// WithLayerCacheBlobDelete says whether Delete, and the removal of a
// corrupt entry, also delete the blob from the registry (default true).
// Turn it off when the repository also holds images, which may share
// blobs with the cache: a blob DELETE unlinks the blob from the whole
// repository.
func WithLayerCacheBlobDelete(on bool) LayerCacheOption {
	return func(o *layerCacheOptions) error {
		o.blobDelete = on
		return nil
	}
}

// WithIndexSettle sets the least time an index write waits before it reads
// the index back to check that no other writer dropped its entries
// (default 25ms). The wait is at least twice the time the update's own
// read-modify-write took, and at most 2s. 0 turns the wait off (the read
// back still happens): fit for a repository with a single writer.
func WithIndexSettle(d time.Duration) LayerCacheOption {
	return func(o *layerCacheOptions) error {
		if d < 0 {
			return fmt.Errorf("registry: WithIndexSettle(%v): must not be negative", d)
		}
		o.settle = d
		return nil
	}
}

// NewLayerCache returns a LayerCache on repo ("harbor.example.com/ci/cache",
// "localhost:5000/buildcache"). It makes no request: the repository and its
// index are created by the first Put.
func NewLayerCache(repo string, opts ...LayerCacheOption) (*LayerCache, error) {
	o := layerCacheOptions{
		keychain:   authn.DefaultKeychain,
		transport:  remote.DefaultTransport,
		tag:        DefaultIndexTag,
		retry:      retryPolicy{attempts: 4, backoff: 200 * time.Millisecond, maxWait: 10 * time.Second, sleep: sleepCtx},
		blobDelete: true,
		settle:     25 * time.Millisecond,
		userAgent:  "buildcache",
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.auth != nil && o.keychainSet {
		return nil, errors.New("registry: NewLayerCache: either WithLayerCacheAuth or WithLayerCacheKeychain, not both")
	}
	var nameOpts []name.Option
	if o.insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	r, err := name.NewRepository(repo, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("registry: NewLayerCache: invalid repository %q: %w", repo, err)
	}
	return &LayerCache{
		repo: r,
		tag:  r.Tag(o.tag),
		o:    o,
		client: &lcClient{
			repo: r, base: o.transport, keychain: o.keychain, auth: o.auth,
			retry: o.retry, agent: o.userAgent,
		},
	}, nil
}

// Repository is the repository the blobs live in ("host:port/ci/cache"),
// for tools that share it, such as BuildKit's type=registry cache.
func (c *LayerCache) Repository() string { return c.repo.Name() }

// IndexTag is the tag of the manifest listing the cached blobs. Nothing
// else may write to it.
func (c *LayerCache) IndexTag() string { return c.tag.TagStr() }

// Insecure reports whether the registry is spoken to over plain HTTP
// (WithLayerCacheInsecure, or a loopback or private-network address, as
// go-containerregistry decides).
func (c *LayerCache) Insecure() bool { return c.repo.Scheme() == "http" }

// Stats reports what the cache has done since it was created. Evictions
// counts entries dropped because their blob was gone from the registry.
func (c *LayerCache) Stats() cache.Stats { return c.stats.Snapshot() }

// Stat implements cache.Stater: the blob is listed in the index and the
// registry has it. A blob the registry has lost, or holds at another size
// than the index records, is dropped from the index and reported as
// cache.ErrNotFound (the second case also wraps cache.ErrCorrupt).
func (c *LayerCache) Stat(ctx context.Context, d v1.Hash) (int64, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return 0, err
	}
	st, err := c.index(ctx)
	if err != nil {
		return 0, c.failed("stat", d, err)
	}
	size, ok := st.entries[d]
	if !ok {
		return 0, fmt.Errorf("registry: %s: %w", d, cache.ErrNotFound)
	}
	got, found, err := c.client.headBlob(ctx, d)
	if err != nil {
		return 0, c.failed("stat", d, err)
	}
	if !found {
		c.dropGone(ctx, d)
		return 0, fmt.Errorf("registry: %s: listed in the index but gone from the registry (entry dropped): %w", d, cache.ErrNotFound)
	}
	if got >= 0 && got != size {
		c.stats.Corruptions.Add(1)
		c.dropCorrupt(ctx, d)
		return 0, fmt.Errorf("registry: %s: the registry holds %d bytes, the index %d (entry dropped): %w, %w", d, got, size, cache.ErrCorrupt, cache.ErrNotFound)
	}
	return size, nil
}

// Get implements cache.Getter. The blob is streamed from the registry and
// verified as it is read; on a mismatch the read fails with
// cache.ErrCorrupt and the entry is removed.
func (c *LayerCache) Get(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("registry: get %s: %w", d, context.Cause(ctx))
	}
	st, err := c.index(ctx)
	if err != nil {
		return nil, c.failed("get", d, err)
	}
	size, ok := st.entries[d]
	if !ok {
		c.stats.Misses.Add(1)
		return nil, fmt.Errorf("registry: %s: %w", d, cache.ErrNotFound)
	}
	resp, err := c.client.do(ctx, lcRequest{
		op: "GET blob", method: http.MethodGet, url: c.client.url("blobs", d.String()),
		ok: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return nil, c.failed("get", d, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		drain(resp)
		c.stats.Misses.Add(1)
		c.dropGone(ctx, d)
		return nil, fmt.Errorf("registry: %s: listed in the index but gone from the registry (entry dropped): %w", d, cache.ErrNotFound)
	}
	c.stats.Hits.Add(1)
	return &lcBlobReader{c: c, ctx: ctx, d: d, body: resp.Body, v: verify.NewReader(resp.Body, d, size, cache.ErrCorrupt)}, nil
}

// lcBlobReader streams one blob, verifying it, and removes a bad entry.
type lcBlobReader struct {
	c       *LayerCache
	ctx     context.Context
	d       v1.Hash
	body    io.ReadCloser
	v       *verify.Reader
	dropped bool
}

func (r *lcBlobReader) Read(p []byte) (int, error) {
	n, err := r.v.Read(p)
	r.c.stats.BytesOut.Add(uint64(n))
	if err == nil || err == io.EOF {
		return n, err
	}
	if !errors.Is(err, cache.ErrCorrupt) {
		return n, fmt.Errorf("registry: reading %s: %w", r.d, err)
	}
	if !r.dropped {
		r.dropped = true
		r.c.stats.Corruptions.Add(1)
		r.c.dropCorrupt(r.ctx, r.d)
	}
	return n, fmt.Errorf("registry: %w (entry removed)", err)
}

func (r *lcBlobReader) Close() error { return r.body.Close() }

// Put implements cache.Putter. A blob the index lists already is not
// uploaded again and r is not read. Otherwise r is streamed to the
// registry in one monolithic upload (POST, then PUT with the digest),
// hashed on the way; only when the registry has committed it is the blob
// added to the index.
func (c *LayerCache) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("registry: put %s: %w", d, context.Cause(ctx))
	}
	unlock, err := c.locks.lock(ctx, d)
	if err != nil {
		return fmt.Errorf("registry: put %s: %w", d, err)
	}
	defer unlock()
	st, err := c.index(ctx)
	if err != nil {
		return c.failed("put", d, err)
	}
	if _, ok := st.entries[d]; ok {
		return nil
	}

	vr := verify.NewReader(ctxio.Reader(ctx, r), d, size, cache.ErrDigestMismatch)
	body := &errRecorder{r: vr}
	if err := c.client.upload(ctx, d, size, body); err != nil {
		if body.err != nil { // the bytes were wrong, the reader failed or ctx ended
			return fmt.Errorf("registry: put %s: %w", d, body.err)
		}
		return c.failed("put", d, err)
	}
	n := vr.N()
	if !vr.Verified() {
		// The registry answered before reading everything: it had the blob
		// already (it commits a digest only after checking it). Record the
		// size it holds.
		got, found, err := c.client.headBlob(ctx, d)
		if err != nil {
			return c.failed("put", d, err)
		}
		if !found || got < 0 {
			return c.failed("put", d, fmt.Errorf("the registry accepted the upload but cannot say its size"))
		}
		n = got
	}
	if _, err := c.edit(ctx, d, true, n); err != nil {
		return c.failed("put", d, err)
	}
	c.stats.BytesIn.Add(uint64(vr.N()))
	return nil
}

// Delete implements cache.Deleter: the blob is removed from the index,
// then the registry is asked to delete it (see WithLayerCacheBlobDelete).
// That second step is best effort: registries often refuse blob deletion
// (405, UNSUPPORTED, DENIED), and the entry is gone either way.
func (c *LayerCache) Delete(ctx context.Context, d v1.Hash) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	unlock, err := c.locks.lock(ctx, d)
	if err != nil {
		return fmt.Errorf("registry: delete %s: %w", d, err)
	}
	defer unlock()
	existed, err := c.edit(ctx, d, false, 0)
	if err != nil {
		return c.failed("delete", d, err)
	}
	if !existed {
		return fmt.Errorf("registry: delete %s: %w", d, cache.ErrNotFound)
	}
	if c.o.blobDelete {
		c.client.deleteBlob(ctx, d)
	}
	return nil
}

// Walk implements cache.Walker: it lists one version of the index, in
// digest order, without checking that the registry still has each blob.
// fn may call back into the cache.
func (c *LayerCache) Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error {
	st, err := c.index(ctx)
	if err != nil {
		c.countError(err)
		return fmt.Errorf("registry: walk: %w", err)
	}
	for _, d := range st.sorted() {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if err := fn(d, st.entries[d]); err != nil {
			return err
		}
	}
	return nil
}

// failed wraps an operation's error and counts it, unless it is the
// caller's cancellation.
func (c *LayerCache) failed(op string, d v1.Hash, err error) error {
	c.countError(err)
	return fmt.Errorf("registry: %s %s: %w", op, d, err)
}

func (c *LayerCache) countError(err error) {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		c.stats.Errors.Add(1)
	}
}

// dropGone removes d from the index if the registry still has no such
// blob: an in-process Put may have restored it since the caller looked.
func (c *LayerCache) dropGone(ctx context.Context, d v1.Hash) {
	unlock, err := c.locks.lock(ctx, d)
	if err != nil {
		return
	}
	defer unlock()
	if _, found, err := c.client.headBlob(ctx, d); err != nil || found {
		return
	}
	if existed, err := c.edit(ctx, d, false, 0); err == nil && existed {
		c.stats.Evictions.Add(1)
	}
}

// dropCorrupt removes d from the index and, unless disabled, the blob from
// the registry, so that the next Put uploads it again.
func (c *LayerCache) dropCorrupt(ctx context.Context, d v1.Hash) {
	unlock, err := c.locks.lock(ctx, d)
	if err != nil {
		return
	}
	defer unlock()
	if _, err := c.edit(ctx, d, false, 0); err != nil {
		return
	}
	if c.o.blobDelete {
		c.client.deleteBlob(ctx, d)
	}
}

// errRecorder keeps the first error its reader returned other than io.EOF,
// to tell the caller's failures from the registry's after an upload.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// ---- The index ----

// indexState is one version of the index. It is never modified.
type indexState struct {
	digest  v1.Hash           // of the manifest; zero when the tag does not exist
	etag    string            // the registry's ETag for it, if it gave one
	entries map[v1.Hash]int64 // blob -> size; never nil
}

func (s *indexState) sorted() []v1.Hash {
	ds := make([]v1.Hash, 0, len(s.entries))
	for d := range s.entries {
		ds = append(ds, d)
	}
	slices.SortFunc(ds, func(a, b v1.Hash) int { return cmpHash(a, b) })
	return ds
}

func cmpHash(a, b v1.Hash) int {
	if a.Algorithm != b.Algorithm {
		if a.Algorithm < b.Algorithm {
			return -1
		}
		return 1
	}
	switch {
	case a.Hex < b.Hex:
		return -1
	case a.Hex > b.Hex:
		return 1
	}
	return 0
}

// index returns the current index: one HEAD of the tag, and a GET only when
// its digest is not the version this LayerCache last saw.
func (c *LayerCache) index(ctx context.Context) (*indexState, error) {
	var err error
	for range 3 {
		var st *indexState
		if st, err = c.readIndex(ctx); !errors.Is(err, errIndexMoved) {
			return st, err
		}
	}
	return nil, err
}

// errIndexMoved: the revision the tag pointed to vanished before it was
// read (the tag moved and the registry already collected the old one).
var errIndexMoved = errors.New("the index moved while it was read")

func (c *LayerCache) readIndex(ctx context.Context) (*indexState, error) {
	hdr := http.Header{"Accept": {manifestAccept}}
	resp, err := c.client.do(ctx, lcRequest{
		op: "HEAD index", method: http.MethodHead, url: c.client.url("manifests", c.tag.TagStr()),
		header: hdr, ok: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return nil, err
	}
	drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return &indexState{entries: map[v1.Hash]int64{}}, nil
	}
	etag := resp.Header.Get("ETag")
	d, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		// No digest on HEAD (some registries): read the tag itself.
		st, err := c.loadIndex(ctx, c.tag.TagStr(), v1.Hash{})
		if err != nil {
			return nil, err
		}
		st.etag = etag
		c.setCurrent(st)
		return st, nil
	}
	c.snapMu.Lock()
	cur := c.snap
	c.snapMu.Unlock()
	if cur != nil && cur.digest == d {
		if cur.etag != etag {
			cur = &indexState{digest: cur.digest, etag: etag, entries: cur.entries}
			c.setCurrent(cur)
		}
		return cur, nil
	}
	st, _, err := c.loads.Do(ctx, d, func(ctx context.Context) (*indexState, error) {
		return c.loadIndex(ctx, d.String(), d)
	})
	if err != nil {
		return nil, err
	}
	st = &indexState{digest: st.digest, etag: etag, entries: st.entries}
	c.setCurrent(st)
	return st, nil
}

func (c *LayerCache) setCurrent(st *indexState) {
	c.snapMu.Lock()
	c.snap = st
	c.snapMu.Unlock()
}

// loadIndex GETs the index manifest by ref (a digest, or the tag when want
// is zero), checks it and parses it.
func (c *LayerCache) loadIndex(ctx context.Context, ref string, want v1.Hash) (*indexState, error) {
	u := c.client.url("manifests", ref)
	resp, err := c.client.do(ctx, lcRequest{
		op: "GET index", method: http.MethodGet, url: u,
		header: http.Header{"Accept": {manifestAccept}}, ok: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		if want.Hex == "" {
			return &indexState{entries: map[v1.Hash]int64{}}, nil
		}
		return nil, errIndexMoved
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxIndexBytes+1))
	if err != nil {
		return nil, &RemoteError{Op: "GET index", URL: u, Err: err}
	}
	if len(raw) > maxIndexBytes {
		return nil, fmt.Errorf("registry: index %s is over %d bytes", c.tag, maxIndexBytes)
	}
	sum := sha256.Sum256(raw)
	got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if want.Hex != "" && got != want {
		return nil, &RemoteError{Op: "GET index", URL: u, Err: fmt.Errorf("the registry served bytes that hash to %s", got)}
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil || m.ArtifactType != IndexArtifactType ||
		(m.MediaType != "" && m.MediaType != types.OCIManifestSchema1) {
		what := resp.Header.Get("Content-Type")
		if err == nil && m.ArtifactType != "" {
			what = m.ArtifactType
		}
		return nil, fmt.Errorf("registry: %s holds %q, not a buildcache index: refusing to use or overwrite it (choose another tag with WithIndexTag)", c.tag, what)
	}
	st := &indexState{digest: got, entries: make(map[v1.Hash]int64, len(m.Layers))}
	for _, l := range m.Layers {
		if l.MediaType != BlobMediaType || l.Size < 0 || cache.ValidateDigest(l.Digest) != nil {
			continue // the placeholder for an empty index, or nothing of ours
		}
		st.entries[l.Digest] = l.Size
	}
	return st, nil
}

// encodeIndex renders entries as the index manifest. The same set always
// gives the same bytes, so rewriting an unchanged set is no new revision.
func encodeIndex(entries map[v1.Hash]int64) []byte {
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  IndexArtifactType,
		Config:        emptyJSON,
		Layers:        make([]v1.Descriptor, 0, max(len(entries), 1)),
	}
	st := indexState{entries: entries}
	for _, d := range st.sorted() {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: BlobMediaType, Size: entries[d], Digest: d})
	}
	if len(m.Layers) == 0 {
		m.Layers = append(m.Layers, emptyJSON)
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // a v1.Manifest always marshals
	}
	return b
}

// ---- Index updates: queued, merged, written by one goroutine ----

// indexEdit adds d to the index (add) or removes it.
type indexEdit struct {
	ctx  context.Context // its values reach the requests
	d    v1.Hash
	add  bool
	size int64

	existed bool  // result: d was listed just before the edit
	err     error // result
	done    chan struct{}
	batch   *editBatch // set, under qmu, when a write takes the edit
}

// editBatch is the edits one index write applies. Its context is
// cancelled when every caller waiting for it has given up.
type editBatch struct {
	waiters int
	cancel  context.CancelFunc
}

// edit applies one change to the index and waits until it is written and
// verified. Edits that arrive while a write is under way are merged into
// the next one. If ctx ends while the edit is still queued, it is
// withdrawn and nothing changes.
func (c *LayerCache) edit(ctx context.Context, d v1.Hash, add bool, size int64) (existed bool, err error) {
	e := &indexEdit{ctx: ctx, d: d, add: add, size: size, done: make(chan struct{})}
	c.qmu.Lock()
	c.queue = append(c.queue, e)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	c.qmu.Unlock()

	select {
	case <-e.done:
		return e.existed, e.err
	case <-ctx.Done():
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if e.batch == nil {
		if i := slices.Index(c.queue, e); i >= 0 {
			c.queue = slices.Delete(c.queue, i, i+1)
		}
		return false, context.Cause(ctx)
	}
	select {
	case <-e.done:
		return e.existed, e.err
	default:
	}
	if e.batch.waiters--; e.batch.waiters == 0 {
		e.batch.cancel()
	}
	return false, fmt.Errorf("%w (the index update was under way and may still take effect)", context.Cause(ctx))
}

// flush writes queued edits until there are none left.
func (c *LayerCache) flush() {
	for {
		c.qmu.Lock()
		edits := c.queue
		c.queue = nil
		if len(edits) == 0 {
			c.flushing = false
			c.qmu.Unlock()
			return
		}
		ctx, cancel := context.WithCancel(context.WithoutCancel(edits[0].ctx))
		b := &editBatch{waiters: len(edits), cancel: cancel}
		for _, e := range edits {
			e.batch = b
		}
		c.qmu.Unlock()

		c.apply(ctx, edits)
		cancel()
		for _, e := range edits {
			close(e.done)
		}
	}
}

// apply writes edits to the index: read, merge, conditional PUT, wait,
// read back; again while another writer has dropped one of its entries.
func (c *LayerCache) apply(ctx context.Context, edits []*indexEdit) {
	live := edits // edits not yet failed
	failAll := func(err error) {
		for _, e := range live {
			e.err = err
		}
	}
	gone := map[v1.Hash]bool{} // blobs the registry says it does not have
	for attempt := 1; ; attempt++ {
		if attempt > maxIndexAttempts {
			failAll(fmt.Errorf("%w: gave up after %d rounds", errIndexContention, maxIndexAttempts))
			return
		}
		if attempt > 1 {
			if err := sleepCtx(ctx, indexBackoff(attempt)); err != nil {
				failAll(err)
				return
			}
		}
		start := time.Now()
		st, err := c.index(ctx)
		if err != nil {
			failAll(err)
			return
		}
		next := make(map[v1.Hash]int64, len(st.entries)+len(live))
		for d, n := range st.entries {
			next[d] = n
		}
		for _, e := range live {
			_, e.existed = next[e.d]
			if e.add {
				next[e.d] = e.size
			} else {
				delete(next, e.d)
			}
		}
		for d := range gone {
			if _, ok := next[d]; ok {
				delete(next, d)
				c.stats.Evictions.Add(1)
			}
		}
		if sameEntries(next, st.entries) {
			return // every edit holds already
		}
		body := encodeIndex(next)
		if len(body) > maxIndexBytes {
			// Full: refuse the additions, keep the rest.
			live = slices.DeleteFunc(live, func(e *indexEdit) bool {
				if e.add && !e.existed {
					e.err = fmt.Errorf("the index %s would exceed %d bytes: %w", c.tag, maxIndexBytes, cache.ErrNoSpace)
					return true
				}
				return false
			})
			attempt--
			continue
		}
		if err := c.ensureConfig(ctx); err != nil {
			failAll(err)
			return
		}
		written, conflict, unknown, err := c.putIndex(ctx, body, st)
		switch {
		case conflict:
			continue
		case unknown != nil:
			missing, ferr := c.findMissing(ctx, next, unknown)
			if ferr != nil || len(missing) == 0 {
				failAll(err)
				return
			}
			for _, d := range missing {
				if d == emptyJSON.Digest {
					c.configOK.Store(false)
					continue
				}
				gone[d] = true
			}
			live = slices.DeleteFunc(live, func(e *indexEdit) bool {
				if e.add && gone[e.d] {
					e.err = fmt.Errorf("the registry lost %s before it was indexed", e.d)
					return true
				}
				return false
			})
			continue
		case err != nil:
			failAll(err)
			return
		}
		c.setCurrent(&indexState{digest: written, entries: next})

		if err := sleepCtx(ctx, c.settle(time.Since(start))); err != nil {
			failAll(err)
			return
		}
		after, err := c.index(ctx)
		if err != nil {
			failAll(err)
			return
		}
		if after.digest == written || addsHold(after, live) {
			return
		}
		// Another writer's stale write dropped some of ours: merge again.
	}
}

func sameEntries(a, b map[v1.Hash]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for d, n := range a {
		if m, ok := b[d]; !ok || m != n {
			return false
		}
	}
	return true
}

// addsHold reports whether every addition in edits is listed in st.
// Removals are not checked: a writer that lists the blob again may have
// put it again, which is as good a final state.
func addsHold(st *indexState, edits []*indexEdit) bool {
	for _, e := range edits {
		if _, ok := st.entries[e.d]; e.add && !ok {
			return false
		}
	}
	return true
}

func (c *LayerCache) settle(rmw time.Duration) time.Duration {
	if c.o.settle == 0 {
		return 0
	}
	return min(max(c.o.settle, 2*rmw), maxSettle)
}

// indexBackoff is a random wait before merge round attempt, so that
// writers that collided do not collide again.
func indexBackoff(attempt int) time.Duration {
	ceiling := min(10*time.Millisecond<<attempt, time.Second)
	return time.Duration(rand.Int64N(int64(ceiling))) + time.Millisecond
}

// putIndex writes body at the index tag, on condition that the tag still
// holds the version read (st), for registries that honour the condition.
// conflict: the registry says it does not. unknown: the registry refused
// the manifest because it lacks some of its blobs (possibly naming them).
func (c *LayerCache) putIndex(ctx context.Context, body []byte, st *indexState) (written v1.Hash, conflict bool, unknown []v1.Hash, err error) {
	hdr := http.Header{"Content-Type": {string(types.OCIManifestSchema1)}}
	switch {
	case st.digest.Hex == "":
		hdr.Set("If-None-Match", "*")
	case st.etag != "":
		hdr.Set("If-Match", st.etag)
	}
	resp, err := c.client.do(ctx, lcRequest{
		op: "PUT index", method: http.MethodPut, url: c.client.url("manifests", c.tag.TagStr()),
		header: hdr, body: body, ok: []int{http.StatusCreated, http.StatusOK, http.StatusAccepted, http.StatusPreconditionFailed},
	})
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) {
			for _, diag := range terr.Errors {
				if diag.Code == transport.ManifestBlobUnknownErrorCode || diag.Code == transport.BlobUnknownErrorCode {
					if unknown == nil {
						unknown = []v1.Hash{}
					}
					unknown = append(unknown, digestsIn(diag.Detail)...)
				}
			}
		}
		return v1.Hash{}, false, unknown, err
	}
	drain(resp)
	if resp.StatusCode == http.StatusPreconditionFailed {
		return v1.Hash{}, true, nil, nil
	}
	sum := sha256.Sum256(body)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, false, nil, nil
}

// digestsIn finds digests in an error's detail: distribution puts the
// digest there as a string, others as {"digest": ...}.
func digestsIn(detail any) []v1.Hash {
	var out []v1.Hash
	switch v := detail.(type) {
	case string:
		if h, err := v1.NewHash(v); err == nil {
			out = append(out, h)
		}
	case map[string]any:
		for _, x := range v {
			out = append(out, digestsIn(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, digestsIn(x)...)
		}
	}
	return out
}

// findMissing returns the blobs of entries (and the config) the registry
// does not have: named, if the registry named any we list, or else found
// with a HEAD of each.
func (c *LayerCache) findMissing(ctx context.Context, entries map[v1.Hash]int64, named []v1.Hash) ([]v1.Hash, error) {
	var out []v1.Hash
	for _, d := range named {
		if _, ok := entries[d]; ok || d == emptyJSON.Digest {
			out = append(out, d)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for d := range entries {
		g.Go(func() error {
			_, found, err := c.client.headBlob(gctx, d)
			if err == nil && !found {
				mu.Lock()
				out = append(out, d)
				mu.Unlock()
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	c.configOK.Store(false) // it may be the config; ensureConfig checks again
	return out, nil
}

// ensureConfig uploads the index's config blob ("{}") once per LayerCache:
// registries refuse a manifest whose config they do not have.
func (c *LayerCache) ensureConfig(ctx context.Context) error {
	if c.configOK.Load() {
		return nil
	}
	_, found, err := c.client.headBlob(ctx, emptyJSON.Digest)
	if err != nil {
		return err
	}
	if !found {
		if err := c.client.upload(ctx, emptyJSON.Digest, emptyJSON.Size, bytes.NewReader(emptyJSON.Data)); err != nil {
			return err
		}
	}
	c.configOK.Store(true)
	return nil
}

// ---- Per-digest locks ----

// digestLocks serialises Put, Delete and the removal of bad entries per
// digest within a process, so that a Delete cannot interleave with a Put of
// the same blob and leave an entry whose blob is gone.
type digestLocks struct {
	mu sync.Mutex
	m  map[v1.Hash]*digestLock
}

type digestLock struct {
	ch   chan struct{} // holds a token while locked
	refs int           // holders and waiters
}

func (l *digestLocks) lock(ctx context.Context, d v1.Hash) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[v1.Hash]*digestLock{}
	}
	e := l.m[d]
	if e == nil {
		e = &digestLock{ch: make(chan struct{}, 1)}
		l.m[d] = e
	}
	e.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, d)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, context.Cause(ctx)
	}
}

// ---- HTTP ----

// lcClient speaks the part of the distribution API a LayerCache needs,
// with push credentials. Like client (which the resolver uses, and which
// only reads), it sends requests without credentials first and
// authenticates on the first 401, so an anonymous registry costs no extra
// round trip; 429, 5xx and broken connections are retried.
type lcClient struct {
	repo     name.Repository
	base     http.RoundTripper
	keychain authn.Keychain
	auth     authn.Authenticator
	retry    retryPolicy
	agent    string

	authMu sync.Mutex // one authentication at a time
	mu     sync.Mutex
	authed http.RoundTripper // nil until the registry asks for credentials
	gen    int               // bumped by each authentication
}

func (c *lcClient) url(kind, ref string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", c.repo.Registry.Scheme(), c.repo.RegistryStr(), c.repo.RepositoryStr(), kind, ref)
}

func (c *lcClient) transport() (http.RoundTripper, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authed != nil {
		return c.authed, c.gen
	}
	return c.base, c.gen
}

// authenticate answers the registry's challenge with pull and push scope.
// gen is the generation the failed request used: if another goroutine has
// authenticated since, its transport is used instead.
func (c *lcClient) authenticate(ctx context.Context, gen int) error {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if _, cur := c.transport(); cur != gen {
		return nil
	}
	auth := c.auth
	if auth == nil {
		var err error
		if auth, err = authn.Resolve(ctx, c.keychain, c.repo); err != nil {
			return fmt.Errorf("registry: credentials for %s: %w", c.repo, err)
		}
	}
	t, err := transport.NewWithContext(ctx, c.repo.Registry, auth, c.base, []string{c.repo.Scope(transport.PushScope)})
	if err != nil {
		return &RemoteError{Op: "authenticate", URL: c.repo.RegistryStr(), Err: err}
	}
	c.mu.Lock()
	c.authed = t
	c.gen++
	c.mu.Unlock()
	return nil
}

// lcRequest is one request; its body is replayed on retries.
type lcRequest struct {
	op      string // "HEAD index", for errors
	method  string
	url     string
	header  http.Header
	body    []byte
	ok      []int // statuses handed to the caller, who closes the body
	noRetry bool
}

// do sends r, authenticating on the first 401 and retrying 429, 5xx and
// connection failures. A status not in r.ok is a *RemoteError wrapping the
// registry's *transport.Error.
func (c *lcClient) do(ctx context.Context, r lcRequest) (*http.Response, error) {
	triedAuth := false
	wait := c.retry.backoff
	attempts := c.retry.attempts
	if r.noRetry {
		attempts = 1
	}
	for attempt := 1; ; attempt++ {
		var body io.Reader
		if r.body != nil {
			body = bytes.NewReader(r.body)
		}
		req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
		if err != nil {
			return nil, fmt.Errorf("registry: %s: %w", r.op, err)
		}
		for k, vs := range r.header {
			req.Header[k] = vs
		}
		if c.agent != "" {
			req.Header.Set("User-Agent", c.agent)
		}
		rt, gen := c.transport()
		resp, err := (&http.Client{Transport: rt}).Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			if attempt < attempts && retryableNetErr(err) {
				if err := c.retry.sleep(ctx, wait); err != nil {
					return nil, err
				}
				wait = min(wait*2, c.retry.maxWait)
				continue
			}
			return nil, &RemoteError{Op: r.op, URL: r.url, Err: err}
		}
		switch {
		case slices.Contains(r.ok, resp.StatusCode):
			return resp, nil
		case resp.StatusCode == http.StatusUnauthorized && !triedAuth:
			drain(resp)
			triedAuth = true
			if err := c.authenticate(ctx, gen); err != nil {
				return nil, err
			}
			attempt-- // the challenge is not a failure
			continue
		case (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) && attempt < attempts:
			d := wait
			if ra, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				d = ra
			}
			drain(resp)
			if err := c.retry.sleep(ctx, min(d, c.retry.maxWait)); err != nil {
				return nil, err
			}
			wait = min(wait*2, c.retry.maxWait)
			continue
		}
		err = transport.CheckError(resp, r.ok...)
		drain(resp)
		return nil, &RemoteError{Op: r.op, URL: r.url, Status: resp.StatusCode, Err: err}
	}
}

// headBlob returns the size of blob d (-1 if the registry does not say),
// or found false.
func (c *lcClient) headBlob(ctx context.Context, d v1.Hash) (size int64, found bool, err error) {
	resp, err := c.do(ctx, lcRequest{
		op: "HEAD blob", method: http.MethodHead, url: c.url("blobs", d.String()),
		ok: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return 0, false, err
	}
	drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return 0, false, nil
	}
	size = resp.ContentLength
	if size < 0 {
		if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil {
			size = n
		}
	}
	return size, true, nil
}

// upload streams body to the registry as blob d in one monolithic upload:
// POST to open it (and to meet any auth challenge while there is no body
// to replay), then PUT with the digest. It is never retried. size < 0
// sends the body chunked.
func (c *lcClient) upload(ctx context.Context, d v1.Hash, size int64, body io.Reader) error {
	start := c.url("blobs", "uploads/")
	resp, err := c.do(ctx, lcRequest{op: "POST blob upload", method: http.MethodPost, url: start, ok: []int{http.StatusAccepted}})
	if err != nil {
		return err
	}
	loc := resp.Header.Get("Location")
	drain(resp)
	if loc == "" {
		return &RemoteError{Op: "POST blob upload", URL: start, Status: resp.StatusCode, Err: errors.New("no Location in the answer")}
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return &RemoteError{Op: "POST blob upload", URL: start, Status: resp.StatusCode, Err: fmt.Errorf("bad Location: %w", err)}
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	if err != nil {
		return fmt.Errorf("registry: PUT blob: %w", err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	if c.agent != "" {
		req.Header.Set("User-Agent", c.agent)
	}
	rt, _ := c.transport()
	resp, err = (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		// The upload URL may carry the registry's upload state: name the
		// start URL instead.
		return &RemoteError{Op: "PUT blob", URL: start, Err: err}
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return &RemoteError{Op: "PUT blob", URL: start, Status: resp.StatusCode, Err: transport.CheckError(resp, http.StatusCreated)}
	}
	return nil
}

// deleteBlob asks the registry to delete blob d, once, and ignores the
// answer: registries often do not allow it, and the entry is gone from the
// index already.
func (c *lcClient) deleteBlob(ctx context.Context, d v1.Hash) {
	resp, err := c.do(ctx, lcRequest{
		op: "DELETE blob", method: http.MethodDelete, url: c.url("blobs", d.String()),
		ok: []int{http.StatusAccepted, http.StatusOK, http.StatusNoContent, http.StatusNotFound, http.StatusMethodNotAllowed}, noRetry: true,
	})
	if err == nil {
		drain(resp)
	}
}
