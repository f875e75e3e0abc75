package registry

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/internal/flight"
	"github.com/buildcache/buildcache/internal/netfail"
)

// manifestAccept lists the manifest types we understand, for Accept.
var manifestAccept = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
}, ", ")

// client speaks the part of the distribution API that the Resolver
// (manifests and blobs, pull scope, any repository) and the LayerCache
// (blobs, uploads and its index, push scope, one repository) need. It
// sends requests without credentials first and logs in only when a
// registry answers 401, so an anonymous registry costs no extra round trip
// (no /v2/ ping) and a revalidation is exactly one HEAD. Concurrent
// requests that meet the same challenge share one login.
type client struct {
	base     http.RoundTripper
	keychain authn.Keychain
	auth     authn.Authenticator // overrides keychain when set
	retry    retryPolicy
	insecure map[string]bool // registries ("host:port") spoken to over plain HTTP
	agent    string

	mu     sync.Mutex
	authed map[string]login // by scopeKey
	logins flight.Group[loginKey, struct{}]
}

// login is the transport that answers one repository's and scope's
// challenge; gen counts the logins, so that a request that failed with an
// older one does not log in again.
type login struct {
	rt  http.RoundTripper
	gen int
}

type loginKey struct {
	scope string
	gen   int
}

func newClient(o clientOptions) *client {
	c := &client{
		base: o.transport, keychain: o.keychain, auth: o.auth, retry: o.retry,
		agent: o.userAgent, insecure: map[string]bool{}, authed: map[string]login{},
	}
	if c.keychain == nil {
		c.keychain = authn.DefaultKeychain
	}
	for _, h := range o.insecure {
		c.insecure[h] = true
	}
	return c
}

// request is one call of the distribution API.
type request struct {
	op     string // names it in errors ("HEAD index"); default method and kind ("GET blob")
	method string
	repo   name.Repository
	kind   string // "manifests" or "blobs"
	ref    string // a tag, a digest, or "uploads/"
	url    string // an absolute URL instead of kind and ref (an upload's Location); errors still name kind and ref
	push   bool   // needs push scope; pull scope otherwise
	accept string
	header http.Header
	body   []byte    // sent again on every try
	stream io.Reader // sent once: a request with a stream is neither retried nor sent again after a login
	size   int64     // of stream; -1 sends it chunked
	ok     []int     // statuses handed to the caller, who closes the body; default 200
	once   bool      // no retries
}

// normalize marks repo's registry insecure when it is listed as such, so
// that URLs and the login's ping both use plain HTTP.
func (c *client) normalize(repo name.Repository) name.Repository {
	if c.insecure[repo.RegistryStr()] && repo.Registry.Scheme() != "http" {
		if reg, err := name.NewRegistry(repo.RegistryStr(), name.Insecure); err == nil {
			repo.Registry = reg
		}
	}
	return repo
}

func (c *client) url(repo name.Repository, kind, ref string) string {
	repo = c.normalize(repo)
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", repo.Registry.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), kind, ref)
}

func scope(repo name.Repository, push bool) string {
	if push {
		return repo.Scope(transport.PushScope)
	}
	return repo.Scope(transport.PullScope)
}

// scopeKey names a repository and scope among all registries.
func scopeKey(repo name.Repository, push bool) string {
	return repo.RegistryStr() + " " + scope(repo, push)
}

func (c *client) transport(key string) (http.RoundTripper, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.authed[key]; ok {
		return l.rt, l.gen
	}
	return c.base, 0
}

// login answers repo's challenge (basic or bearer token) for the scope,
// with go-containerregistry's transport package. gen is the login the
// refused request used: callers refused under the same one share one
// login, and if another has happened since, its transport is used.
func (c *client) login(ctx context.Context, repo name.Repository, push bool, gen int) error {
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
		rt, err := transport.NewWithContext(ctx, repo.Registry, auth, c.base, []string{scope(repo, push)})
		if err != nil {
			return struct{}{}, &RemoteError{Op: "authenticate", URL: repo.RegistryStr(), Err: err}
		}
		c.mu.Lock()
		c.authed[key] = login{rt: rt, gen: gen + 1}
		c.mu.Unlock()
		return struct{}{}, nil
	})
	return err
}

// do sends r, logging in on the first 401 and retrying 429, 5xx and
// broken connections as the retry policy says. A status not in r.ok is a
// *RemoteError wrapping the registry's *transport.Error; the caller closes
// the body of any other response.
func (c *client) do(ctx context.Context, r request) (*http.Response, error) {
	where := c.url(r.repo, r.kind, r.ref)
	target := cmp.Or(r.url, where)
	op := cmp.Or(r.op, r.method+" "+strings.TrimSuffix(r.kind, "s"))
	ok := r.ok
	if len(ok) == 0 {
		ok = []int{http.StatusOK}
	}
	attempts := c.retry.attempts
	if r.once || r.stream != nil {
		attempts = 1
	}
	key := scopeKey(r.repo, r.push)
	wait := c.retry.start()
	loggedIn := false
	for attempt := 1; ; attempt++ {
		req, err := c.newRequest(ctx, r, target)
		if err != nil {
			return nil, fmt.Errorf("registry: %s: %w", op, err)
		}
		rt, gen := c.transport(key)
		resp, err := (&http.Client{Transport: rt}).Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			if attempt < attempts && netfail.Retryable(err) {
				if err := wait.pause(ctx, ""); err != nil {
					return nil, err
				}
				continue
			}
			return nil, &RemoteError{Op: op, URL: where, Err: err}
		}
		switch {
		case slices.Contains(ok, resp.StatusCode):
			return resp, nil
		case resp.StatusCode == http.StatusUnauthorized && !loggedIn && r.stream == nil:
			drain(resp)
			loggedIn = true
			if err := c.login(ctx, r.repo, r.push, gen); err != nil {
				return nil, err
			}
			attempt-- // the challenge is not a failure
			continue
		case retryableStatus(resp.StatusCode) && attempt < attempts:
			ra := resp.Header.Get("Retry-After")
			drain(resp)
			if err := wait.pause(ctx, ra); err != nil {
				return nil, err
			}
			continue
		}
		err = transport.CheckError(resp, ok...)
		drain(resp)
		return nil, &RemoteError{Op: op, URL: where, Status: resp.StatusCode, Err: err}
	}
}

func (c *client) newRequest(ctx context.Context, r request, url string) (*http.Request, error) {
	var body io.Reader
	switch {
	case r.stream != nil:
		body = r.stream
	case r.body != nil:
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, url, body)
	if err != nil {
		return nil, err
	}
	if r.stream != nil {
		req.ContentLength = r.size
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	if r.accept != "" {
		req.Header.Set("Accept", r.accept)
	}
	if c.agent != "" {
		req.Header.Set("User-Agent", c.agent)
	}
	return req, nil
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
