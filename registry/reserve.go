package registry

// The rate-limit reserve (WithRateLimitReserve): pulls a registry's
// stated budget cannot afford are held back, and the cached copy served
// instead. The budget itself is the client's (regclient.Client.RateLimit),
// learnt from every response, and so shared by all who share the client.

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

// ErrRateLimited is an image that could not be pulled because the
// registry answered 429 Too Many Requests, or because its Retry-After has
// not passed (WithRateLimitReserve). The *regclient.RemoteError, if one
// was received, stays in the chain.
var ErrRateLimited = errors.New("rate limited by the registry")

// tooManyRequests reports whether err is the registry's 429.
func tooManyRequests(err error) bool {
	var re *regclient.RemoteError
	return errors.As(err, &re) && re.Status == http.StatusTooManyRequests
}

// hold says why a pull that would refresh a cached image of host should
// not be sent now (WithRateLimitReserve): "" when it may. retryAfter is
// set when a 429 holds it.
func (r *Resolver) hold(host string) (reason string, retryAfter time.Time) {
	if r.o.reserve < 0 {
		return "", time.Time{}
	}
	rl, ok := r.client.RateLimit(host)
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
	if rl, ok := r.client.RateLimit(host); ok && !rl.RetryAfter.IsZero() {
		when = "after " + rl.RetryAfter.UTC().Format(time.RFC3339)
	}
	return fmt.Errorf("%w (retry %s): %w", ErrRateLimited, when, err)
}
