package registry

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/flight"
)

// maxManifestBytes bounds a manifest read from a registry; registries
// refuse bigger ones.
const maxManifestBytes = 4 << 20

// Resolver is a cache.BaseImageResolver that keeps what it fetches in a
// cache.LayerCache and records each reference's digest as a root of the
// store's index, so a restart remembers it and GC keeps it.
type Resolver struct {
	store  cache.LayerCache
	index  cache.RootIndex
	client *client
	o      options

	resolves flight.Group[string, *cache.ResolvedImage]
	blobs    flight.Group[string, struct{}]
	stats    resolverCounters

	// checked holds revalidation times newer than the index records: the
	// index is rewritten (two fsyncs) at most every persistInterval per
	// reference, so a revalidation costs one HEAD and no disk sync.
	mu      sync.Mutex
	checked map[string]time.Time
}

// persistInterval bounds how stale a revalidation time in the index may
// be; after a crash or restart that costs at most one extra HEAD.
const persistInterval = time.Minute

var _ cache.BaseImageResolver = (*Resolver)(nil)

// NewResolver returns a resolver that keeps images in store. If store
// implements cache.RootIndex (localfs does), references are recorded in it
// and survive restarts; otherwise they are kept in memory.
func NewResolver(store cache.LayerCache, opts ...Option) (*Resolver, error) {
	if store == nil {
		return nil, errors.New("registry: NewResolver: nil store")
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	idx, ok := store.(cache.RootIndex)
	if !ok {
		idx = &memIndex{}
	}
	insecure := map[string]bool{}
	for _, h := range o.insecure {
		insecure[h] = true
	}
	return &Resolver{
		store:   store,
		index:   idx,
		o:       o,
		checked: map[string]time.Time{},
		client: &client{
			base: o.transport, keychain: o.keychain, auth: o.auth, retry: o.retry,
			insecure: insecure, agent: o.userAgent, authed: map[string]http.RoundTripper{},
		},
	}, nil
}

// ResolverStats counts what a Resolver did.
type ResolverStats struct {
	Resolves     uint64 // Resolve calls that returned an image
	Hits         uint64 // answered with no request
	Revalidated  uint64 // one HEAD confirmed the cached digest
	Pulled       uint64 // something was downloaded
	Stale        uint64 // the registry failed and the cached copy was served
	BlobsFetched uint64 // blobs (manifests included) downloaded
	BytesFetched uint64
}

type resolverCounters struct {
	resolves, hits, revalidated, pulled, stale, blobs, bytes atomic.Uint64
}

// Stats reports what the resolver has done.
func (r *Resolver) Stats() ResolverStats {
	c := &r.stats
	return ResolverStats{c.resolves.Load(), c.hits.Load(), c.revalidated.Load(), c.pulled.Load(), c.stale.Load(), c.blobs.Load(), c.bytes.Load()}
}

// Resolve resolves ref ("golang:1.22", "registry:5000/app@sha256:...") to
// its digest and the manifest digest of each requested platform, pulling
// into the store only what it lacks. See cache.PullPolicy for when the
// network is used. 64 concurrent calls for the same reference and options
// make one set of requests.
func (r *Resolver) Resolve(ctx context.Context, ref string, opts ...cache.ResolveOption) (*cache.ResolvedImage, error) {
	ro, err := cache.MakeResolveOptions(opts...)
	if err != nil {
		return nil, err
	}
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("registry: invalid image reference %q: %w", ref, err)
	}
	platforms := ro.Platforms
	if len(platforms) == 0 {
		platforms = r.o.platforms
	}
	platforms = normalizePlatforms(platforms)
	ro.Bypass = ro.Bypass || r.o.bypass
	key := fmt.Sprintf("%s|%s|%d|%v|%v", parsed.Name(), strings.Join(platforms, ","), ro.Policy, ro.MaxAge, ro.Bypass)
	res, _, err := r.resolves.Do(ctx, key, func(ctx context.Context) (*cache.ResolvedImage, error) {
		return r.resolve(ctx, parsed, platforms, ro)
	})
	if err != nil {
		return nil, err
	}
	r.stats.resolves.Add(1)
	out := *res // each caller gets its own copy to modify
	out.Ref = ref
	out.Manifests = maps(res.Manifests)
	return &out, nil
}

func maps(m map[string]v1.Hash) map[string]v1.Hash {
	out := make(map[string]v1.Hash, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// record is what the store's index says about a reference.
type record struct {
	desc       v1.Descriptor
	resolvedAt time.Time // as the index records it
	latest     time.Time // a later revalidation not yet written, if any
}

// lastChecked is when the reference was last known to point to desc.
func (rec *record) lastChecked() time.Time {
	if rec.latest.After(rec.resolvedAt) {
		return rec.latest
	}
	return rec.resolvedAt
}

func (r *Resolver) lookup(ctx context.Context, refName string) (*record, error) {
	im, err := r.index.Index(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.Annotations[cache.AnnotationRefName] == refName {
			at, _ := time.Parse(time.RFC3339Nano, d.Annotations[cache.AnnotationResolvedAt])
			rec := &record{desc: d, resolvedAt: at}
			r.mu.Lock()
			if t, ok := r.checked[refName]; ok && t.After(at) {
				rec.latest = t
			}
			r.mu.Unlock()
			return rec, nil
		}
	}
	return nil, nil
}

// revalidated notes that refName still points to rec's digest, writing the
// index only when its recorded time is older than persistInterval.
func (r *Resolver) revalidated(ctx context.Context, refName string, rec *record) error {
	now := r.o.now()
	if now.Sub(rec.resolvedAt) < persistInterval && !rec.resolvedAt.After(now) {
		r.mu.Lock()
		r.checked[refName] = now
		r.mu.Unlock()
		return nil
	}
	return r.remember(ctx, refName, rec.desc)
}

// remember records ref -> desc as a root, replacing an older record.
func (r *Resolver) remember(ctx context.Context, refName string, desc v1.Descriptor) error {
	desc.Annotations = map[string]string{
		cache.AnnotationRefName:    refName,
		cache.AnnotationResolvedAt: r.o.now().UTC().Format(time.RFC3339Nano),
	}
	desc.Platform = nil
	r.mu.Lock()
	delete(r.checked, refName)
	r.mu.Unlock()
	return r.index.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool {
			return d.Annotations[cache.AnnotationRefName] == refName
		})
		im.Manifests = append(im.Manifests, desc)
		return nil
	})
}

func (r *Resolver) resolve(ctx context.Context, ref name.Reference, platforms []string, ro cache.ResolveOptions) (*cache.ResolvedImage, error) {
	refName := ref.Name()
	if ro.Bypass {
		return r.pull(ctx, ref, nil, platforms, true)
	}
	rec, err := r.lookup(ctx, refName)
	if err != nil {
		return nil, err
	}
	// A digest reference names immutable content: if it is complete here,
	// no policy needs the network.
	if dref, ok := ref.(name.Digest); ok && rec == nil {
		if d, err := v1.NewHash(dref.DigestStr()); err == nil {
			if desc, ok := r.localDescriptor(ctx, d); ok {
				rec = &record{desc: desc}
			}
		}
	}
	var local *cache.ResolvedImage
	if rec != nil {
		local, err = r.complete(ctx, rec.desc, platforms)
		if err != nil && !errors.Is(err, cache.ErrNotFound) && !errors.Is(err, cache.ErrCorrupt) {
			return nil, err
		}
	}
	hit := func() (*cache.ResolvedImage, error) {
		r.stats.hits.Add(1)
		local.Source = cache.Hit
		return local, nil
	}
	if local != nil {
		if _, isDigest := ref.(name.Digest); isDigest {
			if rec.resolvedAt.IsZero() {
				_ = r.remember(ctx, refName, rec.desc)
			}
			return hit()
		}
	}
	switch ro.Policy {
	case cache.PullNever:
		if local != nil {
			return hit()
		}
		return nil, fmt.Errorf("registry: %s with policy never: %w", refName, cache.ErrOffline)
	case cache.PullIfNotPresent:
		if local != nil {
			return hit()
		}
		return r.offlineIfUnreachable(r.pull(ctx, ref, nil, platforms, false))
	}
	// PullAlways.
	if local != nil && ro.MaxAge > 0 && r.o.now().Sub(rec.lastChecked()) < ro.MaxAge {
		return hit()
	}
	if local == nil {
		return r.offlineIfUnreachable(r.pull(ctx, ref, nil, platforms, false))
	}
	head, err := r.head(ctx, ref)
	if err != nil {
		return r.staleOr(ctx, local, err)
	}
	if head.Digest == rec.desc.Digest {
		if err := r.revalidated(ctx, refName, rec); err != nil {
			return nil, err
		}
		r.stats.revalidated.Add(1)
		local.Source = cache.Revalidated
		return local, nil
	}
	res, err := r.pull(ctx, ref, head, platforms, false)
	if err != nil {
		return r.staleOr(ctx, local, err)
	}
	return res, nil
}

// offlineIfUnreachable marks "no answer from the registry, nothing cached"
// as cache.ErrOffline, as the contract says; the *RemoteError stays in the
// chain.
func (r *Resolver) offlineIfUnreachable(res *cache.ResolvedImage, err error) (*cache.ResolvedImage, error) {
	var re *RemoteError
	if err != nil && errors.As(err, &re) && re.Status == 0 && re.Op != "authenticate" {
		return nil, fmt.Errorf("%w: %w", cache.ErrOffline, err)
	}
	return res, err
}

// staleOr serves local as Stale when err is the registry's failure and
// stale-if-error is on; otherwise it returns err.
func (r *Resolver) staleOr(ctx context.Context, local *cache.ResolvedImage, err error) (*cache.ResolvedImage, error) {
	var re *RemoteError
	if !r.o.staleIfError || ctx.Err() != nil || !errors.As(err, &re) || !re.Temporary() {
		return nil, err
	}
	r.stats.stale.Add(1)
	local.Source = cache.Stale
	local.RemoteErr = err
	return local, nil
}

// head asks the registry which digest ref points to: one HEAD request.
func (r *Resolver) head(ctx context.Context, ref name.Reference) (*v1.Descriptor, error) {
	resp, err := r.client.do(ctx, ref.Context(), "HEAD", "manifests", ref.Identifier(), manifestAccept)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	d, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		// Some registries and proxies omit the digest on HEAD: hash the
		// manifest itself, at the cost of one GET.
		desc, _, err := r.getManifest(ctx, ref.Context(), ref.Identifier())
		if err != nil {
			return nil, err
		}
		return &desc, nil
	}
	return &v1.Descriptor{Digest: d, Size: resp.ContentLength, MediaType: types.MediaType(resp.Header.Get("Content-Type"))}, nil
}

// localDescriptor describes a manifest that is in the store.
func (r *Resolver) localDescriptor(ctx context.Context, d v1.Hash) (v1.Descriptor, bool) {
	b, err := r.readBlob(ctx, d, maxManifestBytes)
	if err != nil {
		return v1.Descriptor{}, false
	}
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	if json.Unmarshal(b, &m) != nil {
		return v1.Descriptor{}, false
	}
	return v1.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(b))}, true
}

// readBlob reads a small blob from the store, verified.
func (r *Resolver) readBlob(ctx context.Context, d v1.Hash, limit int64) ([]byte, error) {
	rc, err := r.store.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("registry: %s is larger than %d bytes, not a manifest", d, limit)
	}
	return b, nil
}

// complete checks, with no network, that the store holds top and, for each
// platform, its manifest, config and layers. It returns the resolved image
// or an error wrapping ErrNotFound naming what is missing.
func (r *Resolver) complete(ctx context.Context, top v1.Descriptor, platforms []string) (*cache.ResolvedImage, error) {
	b, err := r.readBlob(ctx, top.Digest, maxManifestBytes)
	if err != nil {
		return nil, err
	}
	local := func(d v1.Hash) ([]byte, error) { return r.readBlob(ctx, d, maxManifestBytes) }
	manifests, err := r.platformManifests(ctx, top.Digest, b, platforms, local, local)
	if err != nil {
		return nil, err
	}
	for _, pm := range manifests {
		for _, d := range pm.blobs {
			if _, err := r.store.Stat(ctx, d.Digest); err != nil {
				return nil, err
			}
		}
	}
	return &cache.ResolvedImage{Digest: top.Digest, Manifests: manifestMap(manifests)}, nil
}

// platformManifest is one platform's manifest and the blobs it needs.
type platformManifest struct {
	platform string
	desc     v1.Descriptor
	raw      []byte
	blobs    []v1.Descriptor // config, then layers
}

func manifestMap(pms []platformManifest) map[string]v1.Hash {
	m := make(map[string]v1.Hash, len(pms))
	for _, pm := range pms {
		m[pm.platform] = pm.desc.Digest
	}
	return m
}

// platformManifests interprets raw, the manifest or index top, and returns
// the requested platforms' manifests, reading children with get.
func (r *Resolver) platformManifests(ctx context.Context, top v1.Hash, raw []byte, platforms []string, getManifest, getConfig func(v1.Hash) ([]byte, error)) ([]platformManifest, error) {
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("registry: manifest %s is not JSON: %w", top, err)
	}
	if probe.MediaType.IsIndex() || (probe.MediaType == "" && probe.Manifests != nil) {
		im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("registry: index %s: %w", top, err)
		}
		descs := make([]v1.Descriptor, len(platforms))
		for i, want := range platforms {
			if descs[i], err = pickPlatform(im, want); err != nil {
				return nil, fmt.Errorf("registry: %s: %w", top, err)
			}
		}
		// The platforms' manifests are fetched at once: one round trip,
		// not one per platform. Two platforms that resolve to one
		// manifest fetch it once.
		var digests []v1.Hash
		for _, desc := range descs {
			if !slices.Contains(digests, desc.Digest) {
				digests = append(digests, desc.Digest)
			}
		}
		raws := make([][]byte, len(digests))
		var g errgroup.Group
		for i, d := range digests {
			g.Go(func() (err error) {
				raws[i], err = getManifest(d)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		out := make([]platformManifest, len(platforms))
		for i, desc := range descs {
			pm, err := parseManifest(desc, raws[slices.Index(digests, desc.Digest)])
			if err != nil {
				return nil, err
			}
			pm.platform = platforms[i]
			out[i] = pm
		}
		return out, nil
	}
	pm, err := parseManifest(v1.Descriptor{Digest: top, Size: int64(len(raw)), MediaType: probe.MediaType}, raw)
	if err != nil {
		return nil, err
	}
	// A single-platform image: its config says which platform it is.
	cfg, err := getConfig(pm.blobs[0].Digest)
	if err != nil {
		return nil, err
	}
	var cf struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if err := json.Unmarshal(cfg, &cf); err != nil || cf.OS == "" || cf.Architecture == "" {
		pm.platform = "unknown"
	} else {
		pm.platform = (&v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}).String()
	}
	return []platformManifest{pm}, nil
}

func parseManifest(desc v1.Descriptor, raw []byte) (platformManifest, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return platformManifest{}, fmt.Errorf("registry: manifest %s: %w", desc.Digest, err)
	}
	if err := cache.ValidateDigest(m.Config.Digest); err != nil {
		return platformManifest{}, fmt.Errorf("registry: manifest %s config: %w", desc.Digest, err)
	}
	pm := platformManifest{desc: desc, raw: raw, blobs: append([]v1.Descriptor{m.Config}, m.Layers...)}
	for _, l := range m.Layers {
		if err := cache.ValidateDigest(l.Digest); err != nil {
			return platformManifest{}, fmt.Errorf("registry: manifest %s layer: %w", desc.Digest, err)
		}
		if len(l.URLs) > 0 {
			return platformManifest{}, fmt.Errorf("registry: manifest %s has a foreign layer %s, which buildcache does not fetch", desc.Digest, l.Digest)
		}
	}
	return pm, nil
}

// pull downloads ref's manifest(s) and whatever blobs the store lacks, and
// records ref. known, if set, is the digest a HEAD just returned; force
// downloads blobs even if they are stored (cache bypass).
func (r *Resolver) pull(ctx context.Context, ref name.Reference, known *v1.Descriptor, platforms []string, force bool) (*cache.ResolvedImage, error) {
	repo := ref.Context()
	id := ref.Identifier()
	if known != nil {
		id = known.Digest.String() // the content HEAD saw, even if the tag moves again
	}
	top, topRaw, err := r.getManifest(ctx, repo, id)
	if err != nil {
		return nil, err
	}
	if dref, ok := ref.(name.Digest); ok && top.Digest.String() != dref.DigestStr() {
		return nil, fmt.Errorf("registry: %s served a manifest with digest %s: %w", ref, top.Digest, cache.ErrDigestMismatch)
	}
	getManifest := func(d v1.Hash) ([]byte, error) {
		if !force {
			if b, err := r.readBlob(ctx, d, maxManifestBytes); err == nil {
				return b, nil
			}
		}
		desc, b, err := r.getManifest(ctx, repo, d.String())
		if err == nil && desc.Digest != d {
			err = fmt.Errorf("registry: %s served %s for %s: %w", repo, desc.Digest, d, cache.ErrDigestMismatch)
		}
		return b, err
	}
	getConfig := func(d v1.Hash) ([]byte, error) { return r.fetchSmallBlob(ctx, repo, d, force) }
	manifests, err := r.platformManifests(ctx, top.Digest, topRaw, platforms, getManifest, getConfig)
	if err != nil {
		return nil, err
	}
	if err := r.fetchBlobs(ctx, ref, manifests, force); err != nil {
		return nil, err
	}
	// Manifests go in after their blobs, so a stored manifest means its
	// blobs are stored (and complete() checks them all anyway, as a crash
	// may keep a manifest and lose a blob whose rename was not synced).
	// Then, before the root is recorded, one sync makes every rename
	// durable: the root never points to blobs a crash could take back.
	var g errgroup.Group
	for _, pm := range manifests {
		g.Go(func() error { return r.putBytes(ctx, pm.desc.Digest, pm.raw) })
	}
	g.Go(func() error { return r.putBytes(ctx, top.Digest, topRaw) })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if ds, ok := r.store.(deferredSyncer); ok {
		if err := ds.SyncBlobs(ctx); err != nil {
			return nil, err
		}
	}
	if err := r.remember(ctx, ref.Name(), top); err != nil {
		return nil, err
	}
	r.stats.pulled.Add(1)
	return &cache.ResolvedImage{Digest: top.Digest, Manifests: manifestMap(manifests), Source: cache.Pulled}, nil
}

// deferredSyncer is a store that can make a group of new blobs durable
// with one sync instead of one each (localfs.Store: a directory fsync per
// blob otherwise). PutDeferred's blob may vanish in a crash until
// SyncBlobs returns; a pull calls SyncBlobs before recording its root.
type deferredSyncer interface {
	PutDeferred(ctx context.Context, d v1.Hash, size int64, r io.Reader) error
	SyncBlobs(ctx context.Context) error
}

// put stores a blob for a pull, deferring its sync to the pull's
// SyncBlobs when the store can.
func (r *Resolver) put(ctx context.Context, d v1.Hash, size int64, body io.Reader) error {
	if ds, ok := r.store.(deferredSyncer); ok {
		return ds.PutDeferred(ctx, d, size, body)
	}
	return r.store.Put(ctx, d, size, body)
}

func (r *Resolver) putBytes(ctx context.Context, d v1.Hash, b []byte) error {
	return r.put(ctx, d, int64(len(b)), bytes.NewReader(b))
}

// getManifest GETs a manifest and checks it against the digest the
// registry claims and, for a digest reference, the one asked for.
func (r *Resolver) getManifest(ctx context.Context, repo name.Repository, id string) (v1.Descriptor, []byte, error) {
	resp, err := r.client.do(ctx, repo, "GET", "manifests", id, manifestAccept)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return v1.Descriptor{}, nil, &RemoteError{Op: "GET manifest", URL: r.client.url(repo, "manifests", id), Err: err}
	}
	if len(b) > maxManifestBytes {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: manifest %s@%s is larger than %d bytes", repo, id, maxManifestBytes)
	}
	r.stats.blobs.Add(1)
	r.stats.bytes.Add(uint64(len(b)))
	d, _, _ := v1.SHA256(bytes.NewReader(b))
	if claimed := resp.Header.Get("Docker-Content-Digest"); claimed != "" && claimed != d.String() {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: %s@%s: registry says %s, bytes hash to %s: %w", repo, id, claimed, d, cache.ErrDigestMismatch)
	}
	if strings.HasPrefix(id, "sha256:") && id != d.String() {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: %s@%s: bytes hash to %s: %w", repo, id, d, cache.ErrDigestMismatch)
	}
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: %s@%s is not a JSON manifest: %w", repo, id, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.MediaType(resp.Header.Get("Content-Type"))
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}, b, nil
}

// fetchSmallBlob downloads a config-sized blob into the store and returns it.
func (r *Resolver) fetchSmallBlob(ctx context.Context, repo name.Repository, d v1.Hash, force bool) ([]byte, error) {
	if err := r.fetchBlob(ctx, repo, v1.Descriptor{Digest: d, Size: -1}, force, nil); err != nil {
		return nil, err
	}
	return r.readBlob(ctx, d, maxManifestBytes)
}

// smallBlob is the size up to which a blob (a config, a tiny layer) is
// fetched in a lane of its own: such a download is a round trip more than
// a transfer, and should neither wait for a slot behind large layers nor
// hold one.
const smallBlob = 1 << 20

// fetchBlobs downloads the blobs of manifests that the store lacks, in
// parallel, and reports progress. Large blobs go largest first, at most
// jobs at a time, so the longest download starts at once and the pull ends
// with the short ones; small blobs go alongside, also at most jobs at a
// time.
func (r *Resolver) fetchBlobs(ctx context.Context, ref name.Reference, manifests []platformManifest, force bool) error {
	var todo []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, pm := range manifests {
		for _, b := range pm.blobs {
			if seen[b.Digest] {
				continue
			}
			seen[b.Digest] = true
			if !force {
				if size, err := r.store.Stat(ctx, b.Digest); err == nil && size == b.Size {
					continue
				}
			}
			todo = append(todo, b)
		}
	}
	slices.SortStableFunc(todo, func(a, b v1.Descriptor) int { return cmp.Compare(b.Size, a.Size) })
	prog := newProgressReporter(ref.Name(), todo, r.o.progress)
	split, _ := slices.BinarySearchFunc(todo, smallBlob, func(d v1.Descriptor, n int64) int { return cmp.Compare(n, d.Size) })
	g, gctx := errgroup.WithContext(ctx)
	lane := func(blobs []v1.Descriptor) error {
		l, lctx := errgroup.WithContext(gctx)
		l.SetLimit(r.o.jobs)
		var skipped error // why blobs were left out, if they were
		for _, b := range blobs {
			if skipped = context.Cause(lctx); skipped != nil {
				break
			}
			l.Go(func() error {
				if err := r.fetchBlob(lctx, ref.Context(), b, force, prog); err != nil {
					return err
				}
				prog.blobDone()
				return nil
			})
		}
		if err := l.Wait(); err != nil {
			return err
		}
		return skipped
	}
	g.Go(func() error { return lane(todo[:split]) })
	g.Go(func() error { return lane(todo[split:]) })
	return g.Wait()
}

// fetchBlob downloads one blob into the store, verified by the store's
// Put. Concurrent fetches of one digest share one download. A connection
// cut mid-blob is retried.
func (r *Resolver) fetchBlob(ctx context.Context, repo name.Repository, desc v1.Descriptor, force bool, prog *progressReporter) error {
	_, _, err := r.blobs.Do(ctx, desc.Digest.String(), func(ctx context.Context) (struct{}, error) {
		if !force {
			if _, err := r.store.Stat(ctx, desc.Digest); err == nil {
				return struct{}{}, nil
			}
		}
		var err error
		for attempt := 1; attempt <= r.o.retry.attempts; attempt++ {
			if err = r.downloadBlob(ctx, repo, desc, force, prog); err == nil {
				return struct{}{}, nil
			}
			var re *RemoteError
			if ctx.Err() != nil || !errors.As(err, &re) || re.Status != 0 {
				break // not a broken connection: do() already retried what it should
			}
			if serr := r.o.retry.sleep(ctx, r.o.retry.backoff); serr != nil {
				break
			}
		}
		return struct{}{}, err
	})
	return err
}

func (r *Resolver) downloadBlob(ctx context.Context, repo name.Repository, desc v1.Descriptor, force bool, prog *progressReporter) error {
	resp, err := r.client.do(ctx, repo, "GET", "blobs", desc.Digest.String(), "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if force {
		_ = r.store.Delete(ctx, desc.Digest) // bypass: replace what is there
	}
	body := &countingBody{r: resp.Body, prog: prog, total: &r.stats.bytes}
	err = r.put(ctx, desc.Digest, desc.Size, body)
	if err != nil {
		var re *RemoteError
		if !errors.Is(err, cache.ErrDigestMismatch) && !errors.As(err, &re) && body.readErr != nil && ctx.Err() == nil {
			// The connection broke mid-blob: report it as the registry's.
			return &RemoteError{Op: "GET blob", URL: r.client.url(repo, "blobs", desc.Digest.String()), Err: err}
		}
		if errors.Is(err, cache.ErrDigestMismatch) {
			return fmt.Errorf("registry: %s served bytes that are not blob %s: %w", repo, desc.Digest, err)
		}
		return err
	}
	r.stats.blobs.Add(1)
	return nil
}

type countingBody struct {
	r       io.Reader
	prog    *progressReporter
	total   *atomic.Uint64
	readErr error
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.total.Add(uint64(n))
		c.prog.add(int64(n))
	}
	if err != nil && err != io.EOF {
		c.readErr = err
	}
	return n, err
}

type progressReporter struct {
	mu sync.Mutex
	p  Progress
	fn func(Progress)
}

func newProgressReporter(ref string, todo []v1.Descriptor, fn func(Progress)) *progressReporter {
	pr := &progressReporter{fn: fn, p: Progress{Ref: ref, BlobsTotal: len(todo)}}
	for _, d := range todo {
		pr.p.BytesTotal += d.Size
	}
	if fn != nil && len(todo) > 0 {
		fn(pr.p)
	}
	return pr
}

func (pr *progressReporter) add(n int64) {
	if pr == nil || pr.fn == nil {
		return
	}
	pr.mu.Lock()
	pr.p.BytesDone += n
	pr.fn(pr.p)
	pr.mu.Unlock()
}

func (pr *progressReporter) blobDone() {
	if pr == nil || pr.fn == nil {
		return
	}
	pr.mu.Lock()
	pr.p.BlobsDone++
	pr.fn(pr.p)
	pr.mu.Unlock()
}

// memIndex keeps roots in memory for stores that have no index of their own.
type memIndex struct {
	mu sync.Mutex
	im v1.IndexManifest
}

func (m *memIndex) Index(ctx context.Context) (*v1.IndexManifest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := m.im
	cp.Manifests = slices.Clone(m.im.Manifests)
	return &cp, nil
}

func (m *memIndex) UpdateIndex(ctx context.Context, fn func(*v1.IndexManifest) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := m.im
	cp.Manifests = slices.Clone(m.im.Manifests)
	if err := fn(&cp); err != nil {
		return err
	}
	m.im = cp
	return nil
}
