package s3

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// Fleet-wide revalidation: before a resolver asks a registry about a
// reference whose record is older than its max age (or that has no
// record), it claims the revalidation by writing a claim into the
// record, conditionally on the ETag it read (or If-None-Match: * when
// there is no record). One process wins; the others read the record
// again and serve its root without a request while the claim lasts
// (Busy), or wait for the winner's record when they have nothing to
// serve. The winner's RecordRoot (the same digest, checked now, or the
// digest the tag moved to) replaces the claim; a winner that fails
// releases it, and one that dies leaves it to expire (WithClaimTTL).
// So a reference costs one registry request per max age across every
// process sharing the bucket, plus one per claim TTL while the registry
// fails.
//
// Times in records and claims are each writer's clock: processes whose
// clocks disagree by a few seconds make an extra request now and then,
// never a wrong answer.

// DefaultClaimTTL is how long a claim keeps other processes from
// revalidating a reference: WithClaimTTL's default.
const DefaultClaimTTL = time.Minute

var _ cache.RevalidationClaimer = (*Cache)(nil)

// ClaimRevalidation implements cache.RevalidationClaimer: one GET of the
// record, and one conditional PUT when the caller is to revalidate.
func (c *Cache) ClaimRevalidation(ctx context.Context, name string, maxAge time.Duration) (cache.RevalidationClaim, func(), error) {
	noop := func() {}
	wait := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		s, found, err := c.readRecord(ctx, name)
		if err != nil {
			return cache.RevalidationClaim{}, noop, err
		}
		doc := s.doc
		now := c.opts.now()
		out := cache.RevalidationClaim{Shared: true}
		if doc.Root != nil {
			out.Root, out.Found = copyRoot(*doc.Root), true
			if at := resolvedAt(*doc.Root); maxAge > 0 && !at.IsZero() && now.Sub(at) < maxAge {
				return out, noop, nil // checked by someone within maxAge
			}
		}
		if cl := doc.Claim; cl != nil && cl.Holder != c.holder && now.Before(cl.Until) {
			if out.Found {
				out.Busy = true
				c.claimsBusy.Add(1)
				return out, noop, nil
			}
			// Nothing to serve: wait for the claimant's record.
			if err := c.sleep(ctx, wait); err != nil {
				return out, noop, fmt.Errorf("s3: waiting for another process to pull %s: %w", name, err)
			}
			wait = min(2*wait, time.Second)
			continue
		}
		out.Claimed = true
		if attempt >= maxRecordAttempts {
			return out, noop, nil // the record keeps changing: ask the registry, unclaimed
		}
		doc.Claim = &claimDoc{Holder: c.holder, Until: now.Add(c.opts.claimTTL)}
		etag := ""
		if found {
			etag = s.etag
		}
		ok, err := c.writeRecord(ctx, name, doc, etag)
		if err != nil {
			return cache.RevalidationClaim{}, noop, err
		}
		if ok {
			c.claimsWon.Add(1)
			return out, func() { c.releaseClaim(name) }, nil
		}
	}
}

// releaseClaim removes this process's claim from name's record, if the
// record still holds it as this process last wrote it (a RecordRoot
// since has ended it already: no request).
func (c *Cache) releaseClaim(name string) {
	s, ok := c.records.Get(name)
	if !ok || s.doc.Claim == nil || s.doc.Claim.Holder != c.holder {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	doc := s.doc
	doc.Claim = nil
	if doc.Root == nil {
		key, _ := c.recordKey(name)
		_ = c.deleteKey(ctx, key, s.etag)
		c.records.Delete(name)
		return
	}
	_, _ = c.writeRecord(ctx, name, doc, s.etag) // a conflict: someone wrote since, and our claim is gone or expires
}

// resolvedAt is when a root was last checked against its registry, or
// zero.
func resolvedAt(d v1.Descriptor) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, d.Annotations[cache.AnnotationResolvedAt])
	return t
}
