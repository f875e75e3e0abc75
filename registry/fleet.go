package registry

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// A store whose records several processes share (a tier over an S3
// bucket: cache.RevalidationClaimer) is asked before the registry: when
// the recorded tag is older than the max age, or not recorded at all, the
// store says whether another process checked it within the max age, is
// checking it now, or pulled it meanwhile — then its root is served with
// no request — or that this process is to ask, in which case what it
// finds is recorded even within persistInterval, so that the others see
// it. So a tag costs one registry request per max age across every
// process sharing the store. Without a max age every request
// revalidates, as it always did.

// fleetAnswer is what the shared records said, for resolve and
// resolveTop.
type fleetAnswer struct {
	rec     *record // the shared root, when the store knows one
	serve   string  // non-empty: serve rec without a request, for this reason
	claimed bool    // this process asks the registry and records the result
	release func()  // ends the claim without a record
}

// askFleet asks the store's shared records about refName, whose record
// here is rec (nil: none) and last checked at rec.lastChecked(). It asks
// only when there is a max age and rec is not within it.
func (r *Resolver) askFleet(ctx context.Context, refName string, rec *record, maxAge time.Duration) (fleetAnswer, error) {
	none := fleetAnswer{rec: rec, release: func() {}}
	if r.claimer == nil || maxAge <= 0 || rec != nil && r.o.now().Sub(rec.lastChecked()) < maxAge {
		return none, nil
	}
	cl, release, err := r.claimer.ClaimRevalidation(ctx, refName, maxAge)
	if err != nil {
		return none, fmt.Errorf("registry: %s: asking the shared records: %w", refName, err)
	}
	if !cl.Shared {
		return none, nil
	}
	out := fleetAnswer{rec: rec, claimed: cl.Claimed, release: release}
	if cl.Found && (rec == nil || rec.desc.Digest != cl.Root.Digest || rec.lastChecked().Before(resolvedAtOf(cl.Root))) {
		out.rec = &record{desc: cl.Root, resolvedAt: resolvedAtOf(cl.Root)}
	}
	if cl.Claimed {
		if out.rec != nil {
			out.rec.claimed = true
		}
		return out, nil
	}
	switch age := r.o.now().Sub(out.rec.lastChecked()); {
	case cl.Busy:
		out.serve = "another process sharing the store is revalidating it now: served the cached copy, no request"
	case rec == nil:
		out.serve = fmt.Sprintf("pulled by another process sharing the store %s ago: no request", age.Round(time.Second))
	default:
		out.serve = fmt.Sprintf("checked %s ago by another process sharing the store, within the max age of %s: no request", age.Round(time.Second), maxAge)
	}
	return out, nil
}

// resolvedAtOf is when a recorded root was last checked, or zero.
func resolvedAtOf(d v1.Descriptor) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, d.Annotations[cache.AnnotationResolvedAt])
	return t
}

// claimerOf finds the store's shared records, if any.
func claimerOf(store cache.LayerCache) cache.RevalidationClaimer {
	c, _ := cache.As[cache.RevalidationClaimer](store)
	return c
}

// askFleetTop is askFleet for resolveTop, which needs only the top
// manifest stored: it updates rec and local with the shared record, and
// reports whether local is to be served as it is. release ends a claim
// when the fetch that follows fails with nothing to serve.
func (r *Resolver) askFleetTop(ctx context.Context, refName string, rec **record, local **cache.ResolvedImage, maxAge time.Duration) (served bool, release func(), err error) {
	fleet, err := r.askFleet(ctx, refName, *rec, maxAge)
	if err != nil {
		return false, nil, err
	}
	if fleet.rec != *rec {
		*rec, *local = fleet.rec, nil
		if _, err := r.store.Stat(ctx, fleet.rec.desc.Digest); err == nil {
			*local = &cache.ResolvedImage{Digest: fleet.rec.desc.Digest}
		}
	}
	if fleet.serve == "" || *local == nil {
		return false, fleet.release, nil
	}
	r.stats.hits.Add(1)
	(*local).Source = cache.Hit
	return true, nil, nil
}
