package regclient

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrFallbackBudget is in the chain of a request's error when the request
// gave up early because its caller has something else to serve
// (WithFallback): a try's wait for an answer was cut to what was left of
// the budget and ran out, or the wait before the next try (a backoff, a
// Retry-After) would have ended past the budget.
var ErrFallbackBudget = errors.New("gave up within the fallback budget")

type fallbackKey struct{}

// WithFallback returns a context under which the client's requests give
// up on a failing registry within budget, for a caller that has something
// else to serve if the registry fails: a cached copy (stale-if-error).
// Under it, each request (Do, and the tries of Retry)
//
//   - is not sent at all while its registry is known to be failing
//     because its last try timed out or it answered a 5xx with a
//     Retry-After that has not passed (KnownDown): it fails at once with
//     a *RemoteError whose Err is a *KnownDownError; one known to refuse
//     connections gets one try, which costs a round trip;
//   - waits for an answer's headers, over all its tries and the waits
//     between them, at most budget from its start, and for the next bytes
//     of a stalled body at most budget (or the Stall bound, if shorter);
//   - does not wait for a backoff or a Retry-After (of a 429 or a 5xx)
//     that would end past the budget: it fails with the answer it has,
//     with ErrFallbackBudget in the chain.
//
// A request made without it keeps the retry policy and the Timeouts, as
// for an image with no cached copy, which has nothing else to serve.
// budget <= 0 returns ctx as it is. A context's own deadline still wins.
func WithFallback(ctx context.Context, budget time.Duration) context.Context {
	if budget <= 0 {
		return ctx
	}
	return context.WithValue(ctx, fallbackKey{}, budget)
}

// fallback is one request's budget under WithFallback; a nil *fallback
// (no budget) allows every wait and changes no bound.
type fallback struct {
	budget   time.Duration
	deadline time.Time // real time: the watchdog's timers run on it
}

// fallbackOf starts the budget of a request made with ctx, or returns nil.
func fallbackOf(ctx context.Context) *fallback {
	b, _ := ctx.Value(fallbackKey{}).(time.Duration)
	if b <= 0 {
		return nil
	}
	return &fallback{budget: b, deadline: time.Now().Add(b)}
}

// bounds are t for the next try: the header bound cut to what is left of
// the budget, the stall bound to the budget.
func (f *fallback) bounds(t Timeouts) Timeouts {
	if f == nil {
		return t
	}
	left := max(time.Until(f.deadline).Round(time.Millisecond), time.Millisecond)
	t.ResponseHeader = min(t.ResponseHeader, left)
	t.Stall = min(t.Stall, f.budget)
	return t
}

// allows reports whether a wait of d before the next try ends within the
// budget.
func (f *fallback) allows(d time.Duration) bool {
	return f == nil || time.Now().Add(d).Before(f.deadline)
}

// gaveUp puts ErrFallbackBudget in the chain of err, the failure a request
// ends with when the budget allowed no further try.
func (f *fallback) gaveUp(err error) error {
	return fmt.Errorf("%w of %v: %w", ErrFallbackBudget, f.budget, err)
}
