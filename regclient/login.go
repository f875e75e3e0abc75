package regclient

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/buildcache/buildcache/internal/netwait"
)

// login answers repo's challenge (basic or bearer token) for the scope,
// with go-containerregistry's transport package. challenge is the
// WWW-Authenticate header of the 401 that asked for it (nil if there was
// none), which stands in for the /v2/ ping the package would send. gen is
// the login the refused request used: callers refused under the same one
// share one login, and if another has happened since, its transport is
// used.
func (c *Client) login(ctx context.Context, repo name.Repository, push bool, gen int, challenge http.Header) error {
	key := scopeKey(repo, push)
	_, _, err := c.logins.Do(ctx, loginKey{key, gen}, func(ctx context.Context) (struct{}, error) {
		if _, cur := c.transport(key); cur != gen {
			return struct{}{}, nil
		}
		auth := c.auth
		if auth == nil {
			var err error
			if auth, err = authn.Resolve(ctx, c.keychain, repo); err != nil {
				return struct{}{}, fmt.Errorf("registry: credentials for %s: %w", repo, err)
			}
		}
		repo := c.normalize(repo)
		// The token request is small: one header and one body bound
		// cover it, as they cover any request.
		d := c.timeouts.ResponseHeader + c.timeouts.Stall
		lctx, cancel := context.WithTimeoutCause(ctx, d, &netwait.TimeoutError{What: "answer to the login", D: d})
		defer cancel()
		base := &knownChallenge{inner: c.base, host: repo.RegistryStr(), scheme: c.Scheme(repo.Registry), header: challenge}
		rt, err := transport.NewWithContext(lctx, repo.Registry, auth, base, []string{scope(repo, push)})
		if err != nil {
			if ctx.Err() != nil {
				return struct{}{}, context.Cause(ctx)
			}
			if cause := context.Cause(lctx); lctx.Err() != nil {
				err = cause
			}
			return struct{}{}, &RemoteError{Op: "authenticate", URL: repo.RegistryStr(), Err: err}
		}
		c.mu.Lock()
		c.authed[key] = login{rt: rt, gen: gen + 1}
		c.mu.Unlock()
		return struct{}{}, nil
	})
	return err
}

// challengeOf returns the WWW-Authenticate header of a 401 from repo's
// registry, or nil when there is none or the 401 came from elsewhere (a
// redirect's target).
func challengeOf(resp *http.Response, repo name.Repository) http.Header {
	vs := resp.Header.Values("WWW-Authenticate")
	if len(vs) == 0 || resp.Request == nil || resp.Request.URL.Host != repo.RegistryStr() {
		return nil
	}
	return http.Header{"Www-Authenticate": vs}
}

// knownChallenge is the transport a login starts from. It answers the one
// /v2/ ping that transport.NewWithContext sends with the challenge the
// refused request already carried, so the login costs no round trip of
// its own. It refuses a ping of the registry over any scheme but the
// client's: go-containerregistry pings private addresses over HTTPS and
// then plain HTTP, and its login would move every later Request to the
// scheme that answered.
type knownChallenge struct {
	inner    http.RoundTripper
	host     string      // the registry's "host:port"
	scheme   string      // the client's for it
	header   http.Header // the challenge; nil: the ping goes out
	answered atomic.Bool
}

func (k *knownChallenge) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.URL.Path != "/v2/" || req.URL.Host != k.host || k.answered.Load() {
		return k.inner.RoundTrip(req)
	}
	if req.URL.Scheme != k.scheme {
		return nil, fmt.Errorf("registry: %s is spoken to over %s, not %s", k.host, k.scheme, req.URL.Scheme)
	}
	if k.header == nil || !k.answered.CompareAndSwap(false, true) {
		return k.inner.RoundTrip(req)
	}
	return &http.Response{
		Status: "401 Unauthorized", StatusCode: http.StatusUnauthorized,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: k.header.Clone(), Body: http.NoBody, Request: req,
	}, nil
}
