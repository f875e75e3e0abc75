package tier

import (
	"context"
	"errors"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/reach"
	"github.com/buildcache/buildcache/internal/rootindex"
)

// A far tier shared by a fleet (an s3.Cache) keeps records of its own:
// one per reference, which every process over the bucket reads and
// writes (cache.RootLookup, cache.RootRecorder), and claims on their
// revalidation (cache.RevalidationClaimer). The tier composes them with
// the near tier's roots:
//
//   - Root: the near tier's; a reference it lacks costs one far lookup
//     (one GET on S3, never a listing), and a root found there is
//     recorded in the near tier, so a fresh replica serves a tag the
//     fleet knows, with no upstream request within the max age and
//     stale when the upstream is down.
//   - RecordRoot: the near tier's, then the far tier's. The first time
//     the tier records a digest for a reference there, what the near
//     tier holds of the image and the far tier lacks (far writes skipped
//     while it was down, blobs a collection of the bucket removed while
//     this machine kept them) is copied to the far tier first: one far
//     HEAD per blob, once. A far failure is counted and logged like any
//     other far failure, not returned: the near record stands.
//   - ClaimRevalidation: the far tier's claims; a root the far tier has
//     checked more recently than the near tier replaces the near one.
//     With a far tier that keeps no claims, or that is down, the answer
//     is Claimed and not Shared: the resolver asks the registry as it
//     would without a fleet.
//
// Leases (capability.go) are both tiers': a pull's blobs are safe from
// the near tier's collectors and from the bucket's.

var _ cache.RevalidationClaimer = (*Cache)(nil)

// backfillConcurrency bounds the far Stats and copies of one back-fill.
const backfillConcurrency = 4

// farRoot looks name up in the far tier's records, and keeps what it
// finds in the near tier.
func (c *Cache) farRoot(ctx context.Context, name string) (v1.Descriptor, bool, error) {
	rl, ok := cache.As[cache.RootLookup](c.far)
	if !ok || !c.farUsable(v1.Hash{}) {
		return v1.Descriptor{}, false, nil
	}
	d, found, err := rl.Root(ctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return v1.Descriptor{}, false, err
		}
		c.farDone(ctx, err)
		return v1.Descriptor{}, false, nil
	}
	c.farDone(ctx, nil)
	if found {
		c.farRecordHits.Add(1)
		_ = rootindex.Record(ctx, c.index(), d) // the next lookup is the near tier's
	}
	return d, found, nil
}

// recordFar writes desc into the far tier's records. The first time
// this tier records a digest for a reference there, it first copies to
// the far tier what the near tier holds of the image and the far tier
// lacks, so that the record sends the fleet to blobs the bucket has.
func (c *Cache) recordFar(ctx context.Context, desc v1.Descriptor) {
	rr, ok := cache.As[cache.RootRecorder](c.far)
	if !ok || !c.farUsable(desc.Digest) {
		return
	}
	name := desc.Annotations[cache.AnnotationRefName]
	last, _ := c.farRecorded.Get(name)
	known := last == desc.Digest
	var err error
	if !known {
		err = c.backfill(ctx, desc)
	}
	if err == nil {
		err = rr.RecordRoot(ctx, desc)
	}
	if known && errors.Is(err, cache.ErrNotFound) { // collected since we recorded it
		if err = c.backfill(ctx, desc); err == nil {
			err = rr.RecordRoot(ctx, desc)
		}
	}
	if err == nil {
		c.farRecorded.Put(name, desc.Digest)
	}
	c.farDone(ctx, err)
}

// maxFarRecorded bounds the references whose far record the tier
// remembers; beyond it, the next record of each costs a back-fill's
// HEADs again.
const maxFarRecorded = 10000

// backfill copies to the far tier every blob of desc's image that the
// near tier holds and the far tier lacks: what far writes skipped while
// the far tier was down, or what a collection of the bucket removed
// while this machine kept it.
func (c *Cache) backfill(ctx context.Context, desc v1.Descriptor) error {
	var present []v1.Hash
	if _, err := reach.Walk(ctx, desc, reach.GetterOf(c.near.Get), reach.Set{}, func(d v1.Hash, _ bool) { present = append(present, d) }); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(backfillConcurrency)
	for _, d := range present {
		g.Go(func() error {
			if _, err := c.far.Stat(gctx, d); !errors.Is(err, cache.ErrNotFound) {
				return err
			}
			size, err := c.near.Stat(gctx, d)
			if errors.Is(err, cache.ErrNotFound) {
				return nil // the near tier has not got it either
			}
			if err != nil {
				return err
			}
			rc, err := c.near.Get(gctx, d)
			if err != nil {
				return err
			}
			defer rc.Close()
			if err := c.far.Put(gctx, d, size, rc); err != nil {
				return err
			}
			c.backfilled.Add(1)
			return nil
		})
	}
	return g.Wait()
}

// forgetFar removes from the far tier's records the roots the near tier
// dropped, each unless the far record was checked later than the near
// root it replaces.
func (c *Cache) forgetFar(ctx context.Context, removed map[string]v1.Descriptor) {
	ri, ok := cache.As[cache.RootIndex](c.far)
	if !ok || !c.farUsable(v1.Hash{}) {
		return
	}
	err := ri.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool {
			gone, ok := removed[d.Annotations[cache.AnnotationRefName]]
			return ok && !checkedBefore(gone, d)
		})
		return nil
	})
	c.farDone(ctx, err)
}

// ClaimRevalidation implements cache.RevalidationClaimer with the far
// tier's claims.
func (c *Cache) ClaimRevalidation(ctx context.Context, name string, maxAge time.Duration) (cache.RevalidationClaim, func(), error) {
	alone := cache.RevalidationClaim{Claimed: true}
	noop := func() {}
	rc, ok := cache.As[cache.RevalidationClaimer](c.far)
	if !ok || !c.farUsable(v1.Hash{}) {
		return alone, noop, nil
	}
	claim, release, err := rc.ClaimRevalidation(ctx, name, maxAge)
	if err != nil {
		if ctx.Err() != nil {
			return cache.RevalidationClaim{}, noop, err
		}
		c.farDone(ctx, err)
		return alone, noop, nil
	}
	c.farDone(ctx, nil)
	if claim.Found && !claim.Claimed {
		near, ok, err := rootindex.Lookup(ctx, c.index(), name)
		if err == nil && (!ok || near.Digest != claim.Root.Digest || checkedBefore(near, claim.Root)) {
			_ = rootindex.Record(ctx, c.index(), claim.Root)
		}
	}
	return claim, release, nil
}

// checkedBefore reports whether root a was checked against its registry
// before root b.
func checkedBefore(a, b v1.Descriptor) bool {
	ta, _ := time.Parse(time.RFC3339Nano, a.Annotations[cache.AnnotationResolvedAt])
	tb, _ := time.Parse(time.RFC3339Nano, b.Annotations[cache.AnnotationResolvedAt])
	return ta.Before(tb)
}

// FleetStats is what a tier did with its far tier's records.
type FleetStats struct {
	FarRecordHits uint64 // roots the near tier lacked, found in the far tier's records
	Backfilled    uint64 // blobs copied from the near tier to the far tier before a record
}

// FleetStats reports what the tier did with its far tier's records.
func (c *Cache) FleetStats() FleetStats {
	return FleetStats{FarRecordHits: c.farRecordHits.Load(), Backfilled: c.backfilled.Load()}
}
