package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/ctxio"
	"github.com/buildcache/buildcache/internal/flight"
	"github.com/buildcache/buildcache/internal/verify"
)

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
//
// # Errors
//
// A registry that gives no answer (refused, reset, timed out, name not
// found) fails Stat, Get, Put and Walk with an error satisfying
// errors.Is(err, cache.ErrOffline), with the *RemoteError in the chain.
type LayerCache struct {
	repo   name.Repository
	tag    name.Tag
	o      layerCacheOptions
	client *client
	stats  cache.Counters

	locks    digestLocks // one Put, Delete or drop per digest at a time
	configOK atomic.Bool // the empty config blob is known to be in the repository
	loads    flight.Group[v1.Hash, *indexState]

	snapMu sync.Mutex
	snap   *indexState // the newest index this LayerCache has read or written

	qmu     sync.Mutex
	open    *indexBatch                    // the batch new edits join; nil when none is waiting
	seq     uint64                         // the last batch's number
	writing chan struct{}                  // holds a token while a batch is written
	writes  flight.Group[uint64, struct{}] // callers waiting for a batch, by number
}

var (
	_ cache.LayerCacheCloser = (*LayerCache)(nil)
	_ cache.StatsReporter    = (*LayerCache)(nil)
)

// NewLayerCache returns a LayerCache on repo ("harbor.example.com/ci/cache",
// "localhost:5000/buildcache"). It makes no request: the repository and its
// index are created by the first Put.
//
// repo is a reference, read by go-containerregistry's (and Docker's)
// rules: its first component is the registry only when it has a "." or
// ":" or is "localhost"; otherwise the whole is a repository on Docker
// Hub, so "harbor/team/cache" is index.docker.io/harbor/team/cache and
// gets Docker Hub's credentials. To name a registry whose host is a single
// label, use NewLayerCacheAt.
func NewLayerCache(repo string, opts ...LayerCacheOption) (*LayerCache, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return nil, fmt.Errorf("registry: NewLayerCache: invalid repository %q: %w", repo, err)
	}
	return newLayerCache("NewLayerCache", r, opts)
}

// NewLayerCacheAt returns a LayerCache on repository ("team/cache") of the
// registry at host ("harbor", "localhost:5000", "registry.example.com"),
// as NewLayerCache does. host is the registry whatever it looks like,
// as the host of a URL is: NewLayerCacheAt("harbor", "team/cache") talks
// to harbor, where NewLayerCache("harbor/team/cache") would talk to Docker
// Hub. repository is lower-case path components of letters, digits and
// "._-" (no empty, "." or ".." component).
func NewLayerCacheAt(host, repository string, opts ...LayerCacheOption) (*LayerCache, error) {
	r, err := repositoryAt(host, repository)
	if err != nil {
		return nil, fmt.Errorf("registry: NewLayerCacheAt: %w", err)
	}
	return newLayerCache("NewLayerCacheAt", r, opts)
}

// repositoryAt is repository on the registry host, with none of a
// reference's guessing about which part is the registry.
func repositoryAt(host, repository string) (name.Repository, error) {
	if host == "" {
		return name.Repository{}, errors.New("no registry host")
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		return name.Repository{}, fmt.Errorf("invalid registry host %q: %w", host, err)
	}
	for _, c := range strings.Split(repository, "/") {
		if c == "" || c == "." || c == ".." {
			return name.Repository{}, fmt.Errorf("invalid repository %q: empty, \".\" or \"..\" path component", repository)
		}
	}
	// "localhost/" makes the parser take all of repository for the
	// repository, so that it checks the characters and the length.
	if _, err := name.NewRepository("localhost/" + repository); err != nil {
		return name.Repository{}, fmt.Errorf("invalid repository %q: %w", repository, err)
	}
	return reg.Repo(repository), nil
}

func newLayerCache(fn string, r name.Repository, opts []LayerCacheOption) (*LayerCache, error) {
	o := defaultLayerCacheOptions()
	for _, opt := range opts {
		if err := opt.applyLayerCache(&o); err != nil {
			return nil, err
		}
	}
	if err := o.client.check(); err != nil {
		return nil, fmt.Errorf("registry: %s: %w", fn, err)
	}
	client := newClient(o.client)
	r = client.normalize(r)
	return &LayerCache{
		repo:    r,
		tag:     r.Tag(o.tag),
		o:       o,
		client:  client,
		writing: make(chan struct{}, 1),
	}, nil
}

// Repository is the repository the blobs live in ("host:port/ci/cache"),
// as a reference that names the same registry when read back by
// go-containerregistry or by BuildKit's type=registry cache. A registry
// whose host is a single label (NewLayerCacheAt("harbor", ...)) is given
// its scheme's default port, "harbor:443/ci/cache", because a reference
// whose first part has no dot, colon or "localhost" means Docker Hub.
// Credentials for it are looked up under "harbor:443".
func (c *LayerCache) Repository() string {
	host := c.repo.RegistryStr()
	if host != "localhost" && !strings.ContainsAny(host, ".:") {
		port := ":443"
		if c.Insecure() {
			port = ":80"
		}
		return host + port + "/" + c.repo.RepositoryStr()
	}
	return c.repo.Name()
}

// IndexTag is the tag of the manifest listing the cached blobs. Nothing
// else may write to it.
func (c *LayerCache) IndexTag() string { return c.tag.TagStr() }

// Insecure reports whether the registry is spoken to over plain HTTP
// (WithInsecureRegistries, or a loopback address).
func (c *LayerCache) Insecure() bool { return c.client.scheme(c.repo.Registry) == "http" }

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
	got, found, err := c.client.headBlob(ctx, c.repo, d)
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
	resp, err := c.client.do(ctx, request{
		method: http.MethodGet, repo: c.repo, kind: "blobs", ref: d.String(), push: true,
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
	if err := c.client.upload(ctx, c.repo, d, size, body); err != nil {
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
		got, found, err := c.client.headBlob(ctx, c.repo, d)
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
// then the registry is asked to delete it (see WithBlobDelete).
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
		c.client.deleteBlob(ctx, c.repo, d)
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
		return fmt.Errorf("registry: walk: %w", markOffline(err))
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
// caller's cancellation. A registry that gave no answer is
// cache.ErrOffline, as for every backend.
func (c *LayerCache) failed(op string, d v1.Hash, err error) error {
	c.countError(err)
	return fmt.Errorf("registry: %s %s: %w", op, d, markOffline(err))
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
	if _, found, err := c.client.headBlob(ctx, c.repo, d); err != nil || found {
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
		c.client.deleteBlob(ctx, c.repo, d)
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

// Close implements io.Closer: it closes the idle connections of the
// transport the cache made (not those of one given with WithTransport).
// The LayerCache stays usable.
func (c *LayerCache) Close() error {
	c.client.closeIdle()
	return nil
}
