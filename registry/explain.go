package registry

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// tally counts what one resolve downloads, for its Explanation. It rides
// in the context so that the shared download paths (manifests, blobs)
// need no extra parameter; the resolver-wide counters are kept apart.
type tally struct {
	blobs atomic.Int64
	bytes atomic.Int64
}

type tallyKey struct{}

func withTally(ctx context.Context) (context.Context, *tally) {
	t := &tally{}
	return context.WithValue(ctx, tallyKey{}, t), t
}

// tallyOf is ctx's tally, or nil.
func tallyOf(ctx context.Context) *tally {
	t, _ := ctx.Value(tallyKey{}).(*tally)
	return t
}

func (t *tally) add(blobs, bytes int64) {
	if t != nil {
		t.blobs.Add(blobs)
		t.bytes.Add(bytes)
	}
}

// explain finishes why and sets it on res, which it returns with err.
func explain(res *cache.ResolvedImage, err error, why cache.Explanation, t *tally, reason string) (*cache.ResolvedImage, error) {
	if err != nil {
		return nil, err
	}
	why.Fetched, why.FetchedBytes = int(t.blobs.Load()), t.bytes.Load()
	why.Reason = reason
	res.Why = why
	return res, nil
}

// missing lists what of top, for platforms, the store lacks: the
// manifests it could not read, or else the blobs they list that are not
// there. It is only asked once complete has failed, before a pull.
func (r *Resolver) missing(ctx context.Context, top v1.Descriptor, platforms []string) []v1.Hash {
	var out []v1.Hash
	b, err := r.readBlob(ctx, top.Digest, cache.MaxManifestBytes)
	if err != nil {
		return []v1.Hash{top.Digest}
	}
	get := r.storedGetter(ctx)
	manifests, err := r.platformManifests(top.Digest, b, platforms, func(d v1.Descriptor, config bool) ([]byte, error) {
		b, err := get(d, config)
		if err != nil {
			out = append(out, d.Digest)
		}
		return b, err
	})
	if err != nil {
		return out
	}
	seen := map[v1.Hash]bool{}
	for _, pm := range manifests {
		for _, d := range pm.blobs {
			if seen[d.Digest] {
				continue
			}
			seen[d.Digest] = true
			if _, err := r.store.Stat(ctx, d.Digest); err != nil {
				out = append(out, d.Digest)
			}
		}
	}
	return out
}

// hold says why a pull that would refresh a cached image of host should
// not be sent now (WithRateLimitReserve): "" when it may. retryAfter is
// set when a 429 holds it.
func (r *Resolver) hold(host string) (reason string, retryAfter time.Time) {
	if r.o.reserve < 0 {
		return "", time.Time{}
	}
	rl, ok := r.client.limits.get(host)
	if !ok {
		return "", time.Time{}
	}
	now := r.o.now()
	if rl.RetryAfter.After(now) {
		return fmt.Sprintf("%s answered 429 Too Many Requests; retry after %s (in %s)", host, rl.RetryAfter.UTC().Format(time.RFC3339), rl.RetryAfter.Sub(now).Round(time.Second)), rl.RetryAfter
	}
	if rl.Stated && rl.Remaining <= r.o.reserve {
		return fmt.Sprintf("the rate limit of %s has %s, at or below the reserve of %d", host, rl, r.o.reserve), time.Time{}
	}
	return "", time.Time{}
}

// held429 is hold's answer just after a 429, which holds even with a
// Retry-After of 0 for this resolve.
func (r *Resolver) held429(host string) (reason string, retryAfter time.Time) {
	if reason, until := r.hold(host); reason != "" {
		return reason, until
	}
	return host + " answered 429 Too Many Requests", time.Time{}
}

// refuseHeld fails a pull of an image that is not cached while a 429 from
// host holds (WithRateLimitReserve): asking again before Retry-After
// would only be refused.
func (r *Resolver) refuseHeld(refName, host string) error {
	if reason, until := r.hold(host); !until.IsZero() {
		return fmt.Errorf("registry: %s is not cached and cannot be pulled: %w: %s", refName, ErrRateLimited, reason)
	}
	return nil
}

// reserved serves local as cache.Reserved: a pull was held back.
func (r *Resolver) reserved(local *cache.ResolvedImage, why cache.Explanation, t *tally, reason string, until time.Time, upstream error) (*cache.ResolvedImage, error) {
	r.stats.reserved.Add(1)
	local.Source = cache.Reserved
	why.RetryAfter = until
	if upstream != nil {
		local.RemoteErr = upstream
		why.UpstreamError = upstream.Error()
	}
	return explain(local, nil, why, t, reason)
}

// rateLimited marks a 429 as ErrRateLimited, naming the wait.
func (r *Resolver) rateLimited(host string, err error) error {
	if err == nil || !tooManyRequests(err) {
		return err
	}
	when := "later"
	if rl, ok := r.client.limits.get(host); ok && !rl.RetryAfter.IsZero() {
		when = "after " + rl.RetryAfter.UTC().Format(time.RFC3339)
	}
	return fmt.Errorf("%w (retry %s): %w", ErrRateLimited, when, err)
}

// short is a digest as reasons print it: "sha256:" and 12 hex digits.
func short(d v1.Hash) string {
	if len(d.Hex) <= 12 {
		return d.String()
	}
	return d.Algorithm + ":" + d.Hex[:12]
}

// blobCount is "1 blob", "3 blobs".
func blobCount(n int) string {
	if n == 1 {
		return "1 blob"
	}
	return fmt.Sprintf("%d blobs", n)
}
