package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/flight"
	"github.com/buildcache/buildcache/internal/rootindex"
	"github.com/buildcache/buildcache/regclient"
)

// Resolver is a cache.BaseImageResolver that keeps what it fetches in a
// cache.LayerCache and records each reference's digest as a root of the
// store's index, so a restart remembers it and GC keeps it.
type Resolver struct {
	store   cache.LayerCache
	index   cache.RootIndex
	claimer cache.RevalidationClaimer // records shared with other processes, if any: fleet.go
	client  *regclient.Client
	o       options

	resolves flight.Group[string, *cache.ResolvedImage]
	blobs    flight.Group[string, struct{}]
	walks    walkCache      // what complete read of stored manifests
	notFound *notFoundCache // references the registry answered 404 for: notfound.go
	stats    resolverCounters
	durable  durableCounters // stats added to the store's lifetime counters: durable.go

	// checked holds revalidation times newer than the index records: the
	// index is rewritten (two fsyncs) at most every persistInterval per
	// reference, so a revalidation costs one HEAD and no disk sync.
	mu      sync.Mutex
	checked map[string]time.Time

	verifyStats     verifyCounts                         // a trust policy's verdicts: verify.go
	referrerFlights flight.Group[string, *ReferrersList] // referrers.go
}

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
	c := o.client
	if c == nil {
		var err error
		if c, err = regclient.New(regclient.WithClock(o.now)); err != nil {
			return nil, fmt.Errorf("registry: NewResolver: %w", err)
		}
	}
	idx, ok := cache.As[cache.RootIndex](store)
	if !ok {
		idx = &rootindex.Memory{}
	}
	return &Resolver{
		store:    store,
		index:    idx,
		claimer:  claimerOf(store),
		walks:    walkCache{Max: maxWalks},
		o:        o,
		checked:  map[string]time.Time{},
		client:   c,
		notFound: newNotFoundCache(o.notFoundTTL, o.now),
		durable:  durableCounters{to: counterStoreOf(store)},
	}, nil
}

type resolverCounters struct {
	resolves, hits, revalidated, pulled, stale, reserved, blobs, bytes atomic.Uint64
	unrecorded                                                         atomic.Uint64 // records.go
	staleBudgetSpent, staleKnownDown, notFoundRemembered               atomic.Uint64
}

// Store is the store the resolver keeps images in, as given to
// NewResolver: what a mirror over the resolver serves from.
func (r *Resolver) Store() cache.LayerCache { return r.store }

// Stats reports what the resolver has done.
func (r *Resolver) Stats() cache.ResolverStats {
	c := &r.stats
	s := cache.ResolverStats{
		Resolves: c.resolves.Load(), Hits: c.hits.Load(), Revalidated: c.revalidated.Load(),
		Pulled: c.pulled.Load(), Stale: c.stale.Load(), Reserved: c.reserved.Load(),
		BlobsFetched: c.blobs.Load(), BytesFetched: c.bytes.Load(),
		RevalidationsUnrecorded: c.unrecorded.Load(),
		StaleBudgetSpent:        c.staleBudgetSpent.Load(),
		StaleKnownDown:          c.staleKnownDown.Load(),
		NotFoundRemembered:      c.notFoundRemembered.Load(),
		RateLimits:              r.client.RateLimits(),
	}
	r.verifyStats.snapshot(&s)
	return s
}

// Resolve resolves ref ("golang:1.22", "registry:5000/app@sha256:...") to
// its digest and the manifest digest of each requested platform, pulling
// into the store only what it lacks. See cache.PullPolicy for when the
// network is used. 64 concurrent calls for the same reference and options
// make one set of requests.
func (r *Resolver) Resolve(ctx context.Context, ref string, opts ...cache.ResolveOption) (*cache.ResolvedImage, error) {
	defer r.persistCounters()
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
	key := fmt.Sprintf("%s|%s|%d|%v|%v", parsed.Name(), strings.Join(platforms, ","), ro.Policy, ro.MaxAge, ro.Bypass)
	res, _, err := r.resolves.Do(ctx, key, func(ctx context.Context) (*cache.ResolvedImage, error) {
		res, err := r.resolve(ctx, parsed, platforms, ro)
		if err == nil {
			err = r.admitResolved(ctx, parsed, res, ro.Policy != cache.PullNever)
		}
		if err == nil {
			err = r.keepWith(ctx, parsed, res, ro.Policy != cache.PullNever)
		}
		return res, err
	})
	if err != nil {
		return nil, err
	}
	r.stats.resolves.Add(1)
	out := *res // each caller gets its own copy to modify
	out.Ref = ref
	out.Manifests = maps.Clone(res.Manifests)
	out.Why.Missing = slices.Clone(res.Why.Missing)
	return &out, nil
}

func (r *Resolver) resolve(ctx context.Context, ref name.Reference, platforms []string, ro cache.ResolveOptions) (*cache.ResolvedImage, error) {
	refName := ref.Name()
	host := ref.Context().RegistryStr()
	why := cache.Explanation{Policy: ro.Policy, MaxAge: ro.MaxAge, Bypass: ro.Bypass}
	ctx, t := withTally(ctx)
	if ro.Bypass {
		if err := r.refuseHeld(refName, host); err != nil {
			return nil, err
		}
		res, err := r.pull(ctx, ref, nil, platforms, true)
		return explain(res, r.rateLimited(host, err), why, t, "the cache was bypassed: pulled everything from the registry")
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
	examine := func() error { // what the store holds of rec's image
		local = nil
		if rec == nil {
			return nil
		}
		why.StoredDigest = rec.desc.Digest
		if at := rec.lastChecked(); !at.IsZero() {
			why.LastChecked, why.Age = at, r.o.now().Sub(at)
		}
		local, err = r.complete(ctx, rec.desc, platforms)
		if err != nil && !errors.Is(err, cache.ErrNotFound) && !errors.Is(err, cache.ErrCorrupt) {
			return err
		}
		if local == nil {
			why.Missing = r.missing(ctx, rec.desc, platforms)
		}
		return nil
	}
	if err := examine(); err != nil {
		return nil, err
	}
	hit := func(reason string) (*cache.ResolvedImage, error) {
		r.stats.hits.Add(1)
		local.Source = cache.Hit
		return explain(local, nil, why, t, reason)
	}
	// pullMissing pulls an image the cache lacks, or has only in part.
	pullMissing := func() (*cache.ResolvedImage, error) {
		if err := r.rememberedNotFound(refName); err != nil {
			return nil, err
		}
		if err := r.refuseHeld(refName, host); err != nil {
			return nil, err
		}
		reason := "not in the cache: pulled"
		if rec != nil {
			reason = fmt.Sprintf("the cached %s lacks %s in the store: pulled again what was missing", short(rec.desc.Digest), blobCount(len(why.Missing)))
		}
		res, err := r.offlineIfUnreachable(r.pull(ctx, ref, nil, platforms, false))
		return explain(res, r.rateLimited(host, err), why, t, reason)
	}
	if local != nil {
		if _, isDigest := ref.(name.Digest); isDigest {
			if rec.resolvedAt.IsZero() {
				_ = r.remember(ctx, refName, rec.desc)
			}
			return hit("a digest reference is immutable, and the cache holds all of it: no request")
		}
	}
	switch ro.Policy {
	case cache.PullNever:
		if local != nil {
			return hit("policy never: served from the cache, no request")
		}
		return nil, fmt.Errorf("registry: %s with policy never: %w", refName, cache.ErrOffline)
	case cache.PullIfNotPresent:
		if local != nil {
			return hit("policy if-not-present: the cache holds it, no request")
		}
		return pullMissing()
	}
	// PullAlways. Processes sharing the store's records ask the registry
	// once per max age between them (fleet.go).
	if _, isDigest := ref.(name.Digest); !isDigest {
		fleet, err := r.askFleet(ctx, refName, rec, ro.MaxAge)
		if err != nil {
			return nil, err
		}
		if fleet.rec != rec {
			rec = fleet.rec
			if err := examine(); err != nil {
				return nil, err
			}
		}
		if fleet.serve != "" && local != nil {
			return hit(fleet.serve)
		}
		defer func() {
			if local == nil {
				fleet.release() // failed with nothing to serve: let another process try now
			}
		}()
	}
	if local != nil && ro.MaxAge > 0 && r.o.now().Sub(rec.lastChecked()) < ro.MaxAge {
		return hit(fmt.Sprintf("checked %s ago, within the max age of %s: no request", why.Age.Round(time.Second), ro.MaxAge))
	}
	if local == nil {
		return pullMissing()
	}
	if err := r.rememberedNotFound(refName); err != nil {
		return nil, err
	}
	// The cached copy is the fallback: a failing registry is waited for
	// at most the stale budget, for the HEAD and for a pull if the tag
	// moved.
	ctx = regclient.WithFallback(ctx, r.o.staleBudget)
	// The HEAD's own answer states the budget: decide after it.
	head, err := r.head(ctx, ref, func() bool { reason, _ := r.hold(host); return reason == "" })
	holdReason, until := r.hold(host)
	switch {
	case errors.Is(err, errHeadNoDigest):
		return r.reserved(local, why, t, fmt.Sprintf("%s; the HEAD gave no digest and a GET would spend a pull: served the cached copy", holdReason), until, nil)
	case err != nil && r.o.reserve >= 0 && tooManyRequests(err):
		reason, until := r.held429(host)
		return r.reserved(local, why, t, reason+": served the cached copy", until, err)
	case err != nil:
		return r.staleOr(ctx, refName, local, why, t, err)
	}
	why.RemoteDigest = head.Digest
	if head.Digest == rec.desc.Digest {
		if err := r.revalidated(ctx, refName, rec); err != nil {
			return nil, err
		}
		r.stats.revalidated.Add(1)
		local.Source = cache.Revalidated
		return explain(local, nil, why, t, "one HEAD: the tag still points to the cached digest")
	}
	if holdReason != "" {
		return r.reserved(local, why, t, fmt.Sprintf("%s: the tag moved to %s, but the cached %s is served instead of a pull", holdReason, short(head.Digest), short(rec.desc.Digest)), until, nil)
	}
	res, err := r.pull(ctx, ref, head, platforms, false)
	if err != nil {
		if r.o.reserve >= 0 && tooManyRequests(err) {
			reason, until := r.held429(host)
			return r.reserved(local, why, t, fmt.Sprintf("%s: the tag moved to %s, but the cached %s is served", reason, short(head.Digest), short(rec.desc.Digest)), until, err)
		}
		return r.staleOr(ctx, refName, local, why, t, err)
	}
	return explain(res, nil, why, t, fmt.Sprintf("the tag moved from %s to %s: pulled what the cache lacked", short(rec.desc.Digest), short(head.Digest)))
}

// offlineIfUnreachable marks "no answer from the registry, nothing cached"
// as cache.ErrOffline, as the contract says; the *RemoteError stays in the
// chain.
func (r *Resolver) offlineIfUnreachable(res *cache.ResolvedImage, err error) (*cache.ResolvedImage, error) {
	if err != nil {
		return nil, regclient.MarkOffline(err)
	}
	return res, nil
}

// staleOr serves local as Stale when err is the registry's failure and
// stale-if-error is on; otherwise it returns err.
func (r *Resolver) staleOr(ctx context.Context, refName string, local *cache.ResolvedImage, why cache.Explanation, t *tally, err error) (*cache.ResolvedImage, error) {
	var re *regclient.RemoteError
	if !r.o.staleIfError || ctx.Err() != nil || !errors.As(err, &re) || !re.Temporary() {
		return nil, err
	}
	r.stats.stale.Add(1)
	local.Source = cache.Stale
	local.RemoteErr = err
	why.UpstreamError = err.Error()
	reason, level := r.staleReason(re, err)
	if l := r.o.logger; l != nil {
		l.Log(ctx, level, "registry failed: serving the cached copy", "ref", refName, "digest", local.Digest.String(), "reason", reason, "err", err.Error())
	}
	return explain(local, nil, why, t, reason)
}

// staleReason says why a cached copy is served Stale after err, and at
// which level to log it, counting the failures that the stale budget
// turned into a Stale answer.
func (r *Resolver) staleReason(re *regclient.RemoteError, err error) (string, slog.Level) {
	what := "did not answer"
	if re.Status != 0 {
		what = fmt.Sprintf("answered %d %s", re.Status, http.StatusText(re.Status))
	}
	var kd *regclient.KnownDownError
	switch {
	case errors.As(err, &kd):
		r.stats.staleKnownDown.Add(1)
		return fmt.Sprintf("%s is known to be failing until %s (it %s): served the cached copy without asking it (stale-if-error)",
			kd.Host, kd.Until.UTC().Format(time.RFC3339), what), slog.LevelDebug
	case errors.Is(err, regclient.ErrFallbackBudget) && re.Status == 0:
		r.stats.staleBudgetSpent.Add(1)
		return fmt.Sprintf("the registry did not answer within the stale budget of %s: served the cached copy (stale-if-error)", r.o.staleBudget), slog.LevelWarn
	case errors.Is(err, regclient.ErrFallbackBudget):
		r.stats.staleBudgetSpent.Add(1)
		return fmt.Sprintf("the registry %s, and asking again would take longer than the stale budget of %s: served the cached copy (stale-if-error)", what, r.o.staleBudget), slog.LevelWarn
	}
	return "the registry failed: served the cached copy (stale-if-error)", slog.LevelWarn
}

// errHeadNoDigest is a HEAD that gave no digest when a GET to find it
// was not allowed (a rate-limit hold).
var errHeadNoDigest = errors.New("registry: HEAD gave no digest")

// head asks the registry which digest ref points to: one HEAD request,
// and a GET if the HEAD gives no digest and mayGet, asked then, allows it.
func (r *Resolver) head(ctx context.Context, ref name.Reference, mayGet func() bool) (*v1.Descriptor, error) {
	resp, err := r.client.Do(ctx, regclient.Request{Method: http.MethodHead, Repo: ref.Context(), Kind: "manifests", Ref: ref.Identifier(), Accept: regclient.ManifestAccept})
	r.notFound.note(ref.Name(), err)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	d, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		// Some registries and proxies omit the digest on HEAD: hash the
		// manifest itself, at the cost of one GET.
		if !mayGet() {
			return nil, errHeadNoDigest
		}
		desc, _, err := r.getManifest(ctx, ref.Context(), ref.Identifier())
		r.notFound.note(ref.Name(), err)
		if err != nil {
			return nil, err
		}
		return &desc, nil
	}
	return &v1.Descriptor{Digest: d, Size: resp.ContentLength, MediaType: types.MediaType(resp.Header.Get("Content-Type"))}, nil
}

// localDescriptor describes a manifest that is in the store.
func (r *Resolver) localDescriptor(ctx context.Context, d v1.Hash) (v1.Descriptor, bool) {
	b, err := r.readBlob(ctx, d, cache.MaxManifestBytes)
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
	key := newWalkKey(top.Digest, platforms)
	w, ok := r.walks.Get(key)
	if ok {
		// The manifests were read before; only whether every blob is still
		// stored can have changed.
		if _, err := r.store.Stat(ctx, top.Digest); err != nil {
			return nil, err
		}
	} else {
		b, err := r.readBlob(ctx, top.Digest, cache.MaxManifestBytes)
		if err != nil {
			return nil, err
		}
		manifests, err := r.platformManifests(top.Digest, b, platforms, r.storedGetter(ctx))
		if err != nil {
			return nil, err
		}
		w = walkOf(manifests)
	}
	for _, d := range w.blobs {
		if _, err := r.store.Stat(ctx, d); err != nil {
			return nil, err
		}
	}
	if !ok {
		r.walks.Put(key, w)
	}
	return &cache.ResolvedImage{Digest: top.Digest, Manifests: maps.Clone(w.manifests)}, nil
}
