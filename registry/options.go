package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// ClientOption configures how a Resolver or a LayerCache talks to
// registries: credentials, transport, plain HTTP, retries, timeouts. Every
// ClientOption is both an Option and a LayerCacheOption.
type ClientOption func(*clientOptions) error

func (f ClientOption) applyResolver(o *options) error             { return f(&o.client) }
func (f ClientOption) applyLayerCache(o *layerCacheOptions) error { return f(&o.client) }

type clientOptions struct {
	keychain  authn.Keychain // nil: authn.DefaultKeychain
	auth      authn.Authenticator
	transport http.RoundTripper // nil: newDefaultTransport(timeouts)
	insecure  []string
	retry     retryPolicy
	timeouts  Timeouts
	userAgent string

	dialTimeoutsSet bool // WithTimeouts set Connect or TLSHandshake
}

func defaultClientOptions() clientOptions {
	return clientOptions{retry: defaultRetry(), timeouts: defaultTimeouts(), userAgent: "buildcache"}
}

func (o *clientOptions) check() error {
	if o.auth != nil && o.keychain != nil {
		return errors.New("either WithAuth or WithKeychain, not both")
	}
	if o.transport != nil && o.dialTimeoutsSet {
		return errors.New("WithTimeouts' Connect and TLSHandshake apply to the default transport, not to WithTransport's: set them on that transport")
	}
	return nil
}

// WithKeychain resolves credentials per registry from k (default
// authn.DefaultKeychain: Docker's config.json and credential helpers). It
// conflicts with WithAuth.
func WithKeychain(k authn.Keychain) ClientOption {
	return func(o *clientOptions) error {
		if k == nil {
			return errors.New("registry: WithKeychain(nil)")
		}
		o.keychain = k
		return nil
	}
}

// WithAuth uses one authenticator for every registry instead of a
// keychain (default: none, the keychain decides). It conflicts with
// WithKeychain.
func WithAuth(a authn.Authenticator) ClientOption {
	return func(o *clientOptions) error {
		if a == nil {
			return errors.New("registry: WithAuth(nil)")
		}
		o.auth = a
		return nil
	}
}

// WithTransport sets the HTTP transport (default: one like
// remote.DefaultTransport, with WithTimeouts' Connect and TLSHandshake
// bounds). t's own dial and TLS settings then apply; the client still
// bounds the wait for response headers and stalled bodies (WithTimeouts)
// by cancelling each request's context, and still sets its User-Agent.
func WithTransport(t http.RoundTripper) ClientOption {
	return func(o *clientOptions) error {
		if t == nil {
			return errors.New("registry: WithTransport(nil)")
		}
		o.transport = t
		return nil
	}
}

// WithInsecureRegistries talks plain HTTP to these registries
// ("host:port", as in the image reference; default none). Loopback
// registries ("localhost", 127.0.0.0/8, ::1) use plain HTTP already;
// every other registry, private addresses included, is spoken to over
// HTTPS unless named here, as Docker and containerd do.
func WithInsecureRegistries(hosts ...string) ClientOption {
	return func(o *clientOptions) error {
		o.insecure = append(o.insecure, hosts...)
		return nil
	}
}

// WithRetry sets how often a request is tried on 429, 5xx and connection
// failures (default 4 attempts), the first backoff (default 200ms, then
// doubling), and the longest single wait, Retry-After included
// (default 10s). A 429 whose Retry-After is longer than maxWait is not
// retried: it fails at once, naming the wait. A LayerCache's blob upload is never retried: its body is
// a stream.
func WithRetry(attempts int, backoff, maxWait time.Duration) ClientOption {
	return func(o *clientOptions) error {
		if attempts < 1 || backoff < 0 || maxWait < 0 {
			return fmt.Errorf("registry: WithRetry(%d, %v, %v): need attempts >= 1 and non-negative waits", attempts, backoff, maxWait)
		}
		o.retry.attempts, o.retry.backoff, o.retry.maxWait = attempts, backoff, maxWait
		return nil
	}
}

// withSleep replaces the retry wait, for tests.
func withSleep(fn func(context.Context, time.Duration) error) ClientOption {
	return func(o *clientOptions) error {
		o.retry.sleep = fn
		return nil
	}
}

// Option configures a Resolver: a ClientOption, or one of the options
// below that only a Resolver has.
type Option interface {
	applyResolver(*options) error
}

type resolverOption func(*options) error

func (f resolverOption) applyResolver(o *options) error { return f(o) }

type options struct {
	client       clientOptions
	platforms    []string
	jobs         int
	staleIfError bool
	bypass       bool
	reserve      int // rate-limit reserve; -1: off
	progress     func(Progress)
	now          func() time.Time
}

func defaultOptions() options {
	return options{
		client:       defaultClientOptions(),
		platforms:    []string{hostPlatform()},
		jobs:         4,
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

// WithDefaultPlatforms sets the platforms Resolve fetches when a call does
// not name any (default: the host's, e.g. "linux/amd64").
func WithDefaultPlatforms(platforms ...string) Option {
	return resolverOption(func(o *options) error {
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
	})
}

// WithJobs bounds parallel blob downloads per Resolve (default 4): at most
// n blobs over 1 MiB at a time, largest first, and alongside them at most
// n smaller ones (configs, small layers), which are more round trip than
// transfer.
func WithJobs(n int) Option {
	return resolverOption(func(o *options) error {
		if n < 1 {
			return fmt.Errorf("registry: WithJobs(%d): need at least 1", n)
		}
		o.jobs = n
		return nil
	})
}

// WithStaleIfError serves the cached copy, with Source Stale, when the
// registry is unreachable or failing (default true). With false such a
// failure is an error.
func WithStaleIfError(on bool) Option {
	return resolverOption(func(o *options) error {
		o.staleIfError = on
		return nil
	})
}

// WithCacheBypass makes every Resolve go to the registry as if nothing
// were cached (default false); cache.WithBypass does it for one call.
func WithCacheBypass() Option {
	return resolverOption(func(o *options) error {
		o.bypass = true
		return nil
	})
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
	return resolverOption(func(o *options) error {
		if n < 0 {
			return fmt.Errorf("registry: WithRateLimitReserve(%d): need n >= 0", n)
		}
		o.reserve = n
		return nil
	})
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
	return resolverOption(func(o *options) error {
		o.progress = fn
		return nil
	})
}

// WithClock replaces time.Now, for tests of WithMaxAge and Prune.
func WithClock(now func() time.Time) Option {
	return resolverOption(func(o *options) error {
		if now == nil {
			return errors.New("registry: WithClock(nil)")
		}
		o.now = now
		return nil
	})
}
