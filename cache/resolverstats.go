package cache

import (
	"fmt"
	"strconv"
	"time"
)

// ResolverStats counts what a resolver (registry.Resolver's Stats) did.
type ResolverStats struct {
	Resolves    uint64 // Resolve calls that returned an image
	Hits        uint64 // answered with no request
	Revalidated uint64 // one HEAD confirmed the cached digest
	Pulled      uint64 // something was downloaded
	Stale       uint64 // the registry failed and the cached copy was served
	// StaleBudgetSpent counts the Stale answers given because the
	// registry did not answer, or asked for a wait (Retry-After,
	// backoff), beyond the stale budget (registry.WithStaleBudget).
	StaleBudgetSpent uint64
	// StaleKnownDown counts the Stale answers given without asking the
	// registry, known to be failing: unreachable lately, or a 5xx's
	// Retry-After not passed (regclient.Client.KnownDown).
	StaleKnownDown uint64
	// NotFoundRemembered counts resolves answered with a 404 the registry
	// gave for the reference lately, without asking it again
	// (registry.WithNotFoundTTL).
	NotFoundRemembered uint64
	// Reserved counts cached copies served without the pull that would
	// have refreshed them, to keep a rate-limit reserve (Reserved).
	Reserved     uint64
	BlobsFetched uint64 // blobs (manifests included) downloaded
	BytesFetched uint64
	// RevalidationsUnrecorded counts revalidations a read-only store could
	// not record in its index; they are kept in memory instead.
	RevalidationsUnrecorded uint64
	// RateLimits is each registry's ("host:port", "index.docker.io") last
	// stated rate limit and 429, from any response the resolver's client
	// received (for a shared client, its other users' too); nil when none
	// has stated one. The map is the caller's.
	RateLimits map[string]RateLimit
	// Verified counts images a trust policy's verification admitted
	// (registry.WithVerifier), and Untrusted those it did not, by reason
	// ("unsigned", "wrong_key", "bad_signature", "identity_mismatch",
	// "unavailable") and by what was done: refused (the policy requires a
	// signature) or warned (admitted all the same). Nil maps when none.
	Verified  uint64
	Untrusted map[UntrustedKey]uint64
}

// UntrustedKey is a count of ResolverStats.Untrusted: why an image
// failed a trust policy's verification, and whether it was refused or,
// under a policy that only warns, admitted.
type UntrustedKey struct {
	Reason  string
	Refused bool
}

// RateLimit is a registry's pull budget as its responses last stated it
// (Docker Hub: "ratelimit-limit: 100;w=21600", "ratelimit-remaining:
// 76;w=21600"; the IETF drafts' RateLimit-Limit/-Remaining/-Reset,
// RateLimit with RateLimit-Policy are read too), and the last 429.
type RateLimit struct {
	Limit     int           // requests allowed per Window; 0 when not stated
	Remaining int           // requests left in the current window
	Window    time.Duration // the window (";w=" seconds); 0 when not stated
	Reset     time.Time     // when the window ends, if stated; zero otherwise
	// Stated is false when no response has carried the headers: only a
	// 429 was seen, and Limit and Remaining say nothing.
	Stated bool
	// RetryAfter is when the last 429 allowed the registry to be asked
	// again (its Retry-After; else Reset; else a minute later). Zero when
	// no 429 was seen; it may be in the past.
	RetryAfter time.Time
	Updated    time.Time // when a response last changed any of the above
}

// String is "76 of 100 left per 6h0m0s", as explanations print it.
func (rl RateLimit) String() string {
	if !rl.Stated {
		return "no budget stated"
	}
	s := strconv.Itoa(rl.Remaining) + " left"
	if rl.Limit > 0 {
		s = fmt.Sprintf("%d of %d left", rl.Remaining, rl.Limit)
	}
	if rl.Window > 0 {
		s += " per " + rl.Window.String()
	}
	return s
}
