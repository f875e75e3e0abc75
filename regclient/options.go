package regclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Option configures a Client: credentials, transport, plain HTTP,
// retries, timeouts.
type Option func(*options) error

type options struct {
	keychain  authn.Keychain // nil: authn.DefaultKeychain
	auth      authn.Authenticator
	transport http.RoundTripper // nil: newDefaultTransport(timeouts)
	insecure  []string
	retry     retryPolicy
	timeouts  Timeouts
	now       func() time.Time

	dialTimeoutsSet bool // WithTimeouts set Connect or TLSHandshake
}

func defaultOptions() options {
	return options{retry: defaultRetry(), timeouts: defaultTimeouts(), now: time.Now}
}

func (o *options) check() error {
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
func WithKeychain(k authn.Keychain) Option {
	return func(o *options) error {
		if k == nil {
			return errors.New("regclient: WithKeychain(nil)")
		}
		o.keychain = k
		return nil
	}
}

// WithAuth uses one authenticator for every registry instead of a
// keychain (default: none, the keychain decides). It conflicts with
// WithKeychain.
func WithAuth(a authn.Authenticator) Option {
	return func(o *options) error {
		if a == nil {
			return errors.New("regclient: WithAuth(nil)")
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
func WithTransport(t http.RoundTripper) Option {
	return func(o *options) error {
		if t == nil {
			return errors.New("regclient: WithTransport(nil)")
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
func WithInsecureRegistries(hosts ...string) Option {
	return func(o *options) error {
		o.insecure = append(o.insecure, hosts...)
		return nil
	}
}

// WithRetry sets how often a request is tried on 429, 5xx and connection
// failures (default 4 attempts), the first backoff (default 200ms, then
// doubling), and the longest single wait, Retry-After included
// (default 10s). A 429 or 5xx whose Retry-After is longer than maxWait
// is not retried: it fails at once (a 5xx's then makes its registry known
// to be failing until the Retry-After has passed: Client.KnownDown). A
// request with a streamed body (a blob upload) is never retried.
// WithFallback cuts these waits short for a caller with a cached copy.
func WithRetry(attempts int, backoff, maxWait time.Duration) Option {
	return func(o *options) error {
		if attempts < 1 || backoff < 0 || maxWait < 0 {
			return fmt.Errorf("regclient: WithRetry(%d, %v, %v): need attempts >= 1 and non-negative waits", attempts, backoff, maxWait)
		}
		o.retry.attempts, o.retry.backoff, o.retry.maxWait = attempts, backoff, maxWait
		return nil
	}
}

// WithClock replaces time.Now (the default) for what the client keeps
// over time, each registry's rate limit and whether it is known to be
// down, for tests of those.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("regclient: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}

// withSleep replaces the retry wait, for tests.
func withSleep(fn func(context.Context, time.Duration) error) Option {
	return func(o *options) error {
		o.retry.sleep = fn
		return nil
	}
}
