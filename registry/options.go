package registry

import (
	"errors"
	"fmt"
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
	reserve      int // rate-limit reserve; -1: off
	progress     func(Progress)
	now          func() time.Time
}

func defaultOptions() options {
	return options{
		platforms:    []string{hostPlatform()},
		concurrency:  4,
		staleIfError: true,
		reserve:      -1,
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

// WithClock replaces time.Now, for tests of WithMaxAge, Prune and the
// rate-limit reserve. A client the resolver makes itself (no WithClient)
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
