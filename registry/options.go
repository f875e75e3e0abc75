package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/buildcache/buildcache/regclient"
)

// Option configures a Resolver.
type Option func(*options) error

type options struct {
	client       *regclient.Client // nil: regclient.New() with WithClock(now)
	platforms    []string
	concurrency  int
	staleIfError bool
	reserve      int           // rate-limit reserve; -1: off
	staleBudget  time.Duration // 0: none, the client's retries and timeouts
	notFoundTTL  time.Duration // 0: 404s are not remembered
	logger       *slog.Logger  // nil: none
	progress     func(Progress)
	now          func() time.Time
	verifier     Verifier // nil: every image admitted (verify.go)
	// keepReferrers: WithReferrers was given; referrerTypes are its
	// artifact types (none: every type).
	keepReferrers bool
	referrerTypes []string
}

func defaultOptions() options {
	return options{
		platforms:    []string{hostPlatform()},
		concurrency:  4,
		staleIfError: true,
		reserve:      -1,
		staleBudget:  DefaultStaleBudget,
		notFoundTTL:  DefaultNotFoundTTL,
		now:          time.Now,
	}
}

func hostPlatform() string {
	p := runtime.GOOS + "/" + runtime.GOARCH
	if runtime.GOARCH == "arm" {
		p += "/v7"
	}
	return p
}

// WithClient sends the resolver's requests through c (default: a client
// of its own, regclient.New() with the defaults it states). A resolver, a
// repository-backed cache (ocirepo.WithClient) and a mirror that share
// one client share its logins, its view of each registry's rate limit and
// the registries it knows to be down. Credentials, plain HTTP, retries
// and timeouts are the client's options.
func WithClient(c *regclient.Client) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("registry: WithClient(nil)")
		}
		o.client = c
		return nil
	}
}

// WithDefaultPlatforms sets the platforms Resolve fetches when a call does
// not name any (default: the host's, e.g. "linux/amd64").
func WithDefaultPlatforms(platforms ...string) Option {
	return func(o *options) error {
		if len(platforms) == 0 {
			return errors.New("registry: WithDefaultPlatforms: no platform given")
		}
		for _, p := range platforms {
			if _, err := parsePlatform(p); err != nil {
				return err
			}
		}
		o.platforms = platforms
		return nil
	}
}

// WithConcurrency bounds parallel blob downloads per Resolve (default 4):
// at most n blobs over 1 MiB at a time, largest first, and alongside them
// at most n smaller ones (configs, small layers), which are more round
// trip than transfer.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("registry: WithConcurrency(%d): need at least 1", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithStaleIfError serves the cached copy, with Source Stale, when the
// registry is unreachable or failing (default true). With false such a
// failure is an error.
func WithStaleIfError(on bool) Option {
	return func(o *options) error {
		o.staleIfError = on
		return nil
	}
}

// DefaultStaleBudget is how long, by default, a resolve of a cached image
// waits for a failing registry before it serves the cached copy
// (WithStaleBudget).
const DefaultStaleBudget = 5 * time.Second

// WithStaleBudget bounds how long a resolve that has a cached copy to
// serve waits for a registry that fails (default DefaultStaleBudget, 5s):
// silent, refusing connections, answering 5xx or 429, or asking with
// Retry-After for a longer wait. Within d the client retries as its
// policy says; past it, or at once when a Retry-After is longer, the
// cached copy is served Stale (stale-if-error), and a registry whose
// last try timed out, or whose 5xx named a Retry-After, is not asked
// again by such resolves while it is known to be failing
// (regclient.Client.KnownDown): they serve the cached copy at once. The
// bound applies to every wait for the registry in such a resolve (the
// revalidating HEAD, and the pull of a tag that moved), not to a download
// that keeps moving. An image with no cached copy has nothing else to
// serve and keeps the client's retries and timeouts. d = 0 turns the
// budget off: a cached image then waits as an uncached one does.
// Stale answers are counted in Stats (StaleBudgetSpent, StaleKnownDown),
// explained in ResolvedImage.Why, and logged (WithLogger).
func WithStaleBudget(d time.Duration) Option {
	return durationOption("WithStaleBudget", d, func(o *options) *time.Duration { return &o.staleBudget })
}

// DefaultNotFoundTTL is how long, by default, a registry's 404 for a
// reference is remembered (WithNotFoundTTL).
const DefaultNotFoundTTL = 30 * time.Second

// WithNotFoundTTL remembers for d that the registry answered 404 (manifest
// unknown) for a reference (default DefaultNotFoundTTL, 30s): meanwhile
// Resolve and ResolveTop of it fail with that answer, a *regclient.RemoteError
// with Status 404, and no request, so that a client pulling a missing tag
// (a docker pull asks twice) costs the registry one request per d. A tag
// pushed meanwhile is seen once d has passed; a resolve with
// cache.WithBypass asks at once. At most 4096 references are remembered,
// the oldest dropped first. d = 0 remembers none.
func WithNotFoundTTL(d time.Duration) Option {
	return durationOption("WithNotFoundTTL", d, func(o *options) *time.Duration { return &o.notFoundTTL })
}

// durationOption is the Option name(d): it sets the field of options
// that field points to, refusing a negative d.
func durationOption(name string, d time.Duration, field func(*options) *time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("registry: %s(%v): need d >= 0", name, d)
		}
		*field(o) = d
		return nil
	}
}

// WithLogger logs, on l, each cached copy served because the registry
// failed: at Warn when the registry was asked (it failed, or did not
// answer within the stale budget), at Debug when it was not (known to be
// failing). Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		o.logger = l
		return nil
	}
}

// WithRateLimitReserve keeps the last n pulls of a registry's rate-limit
// budget (its RateLimit-Remaining, as its last response stated it) for
// images that are not cached. Default: off, pulls go ahead until the
// registry refuses. With a reserve, while the registry's remaining count
// is at or below n, or a 429's Retry-After (else its stated reset, else a
// minute) has not passed:
//
//   - a cached image is still revalidated with one HEAD, which Docker Hub
//     does not count; if the tag has not moved it is Revalidated as usual;
//   - if the tag has moved (or the HEAD gives no digest, which a GET would
//     find), no manifest is fetched: the cached copy is served with
//     Source cache.Reserved, and Why says why;
//   - an image that is not cached is pulled, spending the budget kept for
//     it; while a 429 holds, it fails at once with ErrRateLimited naming
//     the Retry-After, without a request.
//
// n = 0 holds pulls back only when the budget is spent or after a 429.
// Resolver.Stats reports each registry's last RateLimit.
func WithRateLimitReserve(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("registry: WithRateLimitReserve(%d): need n >= 0", n)
		}
		o.reserve = n
		return nil
	}
}

// Progress reports a pull's bytes, for progress bars.
type Progress struct {
	Ref        string
	BytesDone  int64
	BytesTotal int64 // of the blobs this pull downloads
	BlobsDone  int
	BlobsTotal int
}

// WithProgress calls fn as blobs download (from several goroutines, but
// never concurrently; default none).
func WithProgress(fn func(Progress)) Option {
	return func(o *options) error {
		o.progress = fn
		return nil
	}
}

// WithClock replaces time.Now, for tests of WithMaxAge, Prune, the
// rate-limit reserve and WithNotFoundTTL. A client the resolver makes itself (no WithClient)
// keeps its rate limits and down registries by this clock too; give a
// client of your own regclient.WithClock.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("registry: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}
