package regclient

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/buildcache/buildcache/internal/ctxio"
)

// retryPolicy is how a request is tried again on 429, 5xx and broken
// connections: attempts in all, waits starting at backoff and doubling,
// no wait longer than maxWait, Retry-After honoured within that cap.
type retryPolicy struct {
	attempts int           // total tries, >= 1
	backoff  time.Duration // first wait; doubles
	maxWait  time.Duration // cap on one wait, Retry-After included
	sleep    func(context.Context, time.Duration) error
}

func defaultRetry() retryPolicy {
	return retryPolicy{attempts: 4, backoff: 200 * time.Millisecond, maxWait: 10 * time.Second, sleep: ctxio.Sleep}
}

// backoff is one request's progress through its retry policy.
type backoff struct {
	p    *retryPolicy
	wait time.Duration // the next wait, unless Retry-After says otherwise
}

func (p *retryPolicy) start() backoff { return backoff{p: p, wait: p.backoff} }

// next is the wait the next try calls for: the answer's Retry-After,
// if it gave one (ra, hasRA), else the current backoff, which doubles up
// to maxWait. It is not capped: pause caps it, and a caller may decide
// it is too long to wait for at all.
func (b *backoff) next(ra time.Duration, hasRA bool) time.Duration {
	d := b.wait
	if hasRA {
		d = ra
	}
	b.wait = min(b.wait*2, b.p.maxWait)
	return d
}

// pause waits d before the next try, never more than maxWait.
func (b *backoff) pause(ctx context.Context, d time.Duration) error {
	return b.p.sleep(ctx, min(d, b.p.maxWait))
}

// retryableStatus: the registry is overloaded or failing, not refusing.
func retryableStatus(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// Retry calls fn until it succeeds, at most as many times as the retry
// policy's attempts (WithRetry), for work whose connection may break
// after Do has handed its answer over (a download that fails mid-body,
// which Do cannot send again). Only a *RemoteError with no status (the
// connection broke; nothing was refused) is tried again, after the first
// backoff; any other error, a registry known to be failing
// (*KnownDownError), a backoff past ctx's fallback budget (WithFallback,
// counted from the call), or ctx ending, ends it with fn's last error.
func (c *Client) Retry(ctx context.Context, fn func() error) error {
	fb := fallbackOf(ctx)
	var err error
	for attempt := 1; attempt <= c.retry.attempts; attempt++ {
		if err = fn(); err == nil {
			return nil
		}
		var re *RemoteError
		var kd *KnownDownError
		if attempt == c.retry.attempts || ctx.Err() != nil || !errors.As(err, &re) || re.Status != 0 ||
			errors.As(err, &kd) || !fb.allows(c.retry.backoff) {
			break
		}
		if c.retry.sleep(ctx, c.retry.backoff) != nil {
			break
		}
	}
	return err
}
