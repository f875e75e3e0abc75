package regclient

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/internal/flight"
	"github.com/buildcache/buildcache/internal/netfail"
	"github.com/buildcache/buildcache/internal/netwait"
)

// ManifestAccept is the Accept header of a manifest request: the image
// index and manifest media types of OCI and Docker, which are what this
// module reads.
var ManifestAccept = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
}, ", ")

// Client speaks the part of the distribution API that a resolver
// (manifests and blobs, pull scope, any repository), a repository-backed
// cache (blobs, uploads and its index, push scope, one repository) and a
// mirror need. It sends requests without credentials first and logs in
// only when a registry answers 401, with the challenge of that answer, so
// an anonymous registry costs no extra round trip (no /v2/ ping), a
// revalidation is exactly one HEAD, and an authenticated one two (the
// 401, then the HEAD; a bearer token adds the token server's). Concurrent
// requests that meet the same challenge share one login. Every try of a
// request is bounded by the Timeouts (see netwait.Watchdog).
//
// A Client is safe for concurrent use, and meant to be shared: what it
// learns about a registry (its logins, its rate limit, that it is down)
// serves every user of the Client.
type Client struct {
	base     http.RoundTripper // the transport, setting our User-Agent
	own      *http.Transport   // the transport the client made, if it did
	keychain authn.Keychain
	auth     authn.Authenticator // overrides keychain when set
	retry    retryPolicy
	timeouts Timeouts
	insecure map[string]bool // registries ("host:port") spoken to over plain HTTP
	limits   *rateLimits     // each registry's last stated rate limit, from every response
	down     *downHosts      // registries no try could reach lately

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

// New returns a Client configured by opts; with none, it is anonymous
// unless the Docker keychain has credentials, speaks HTTPS to every
// registry but loopback ones, and retries and bounds its requests as the
// options' defaults say. It makes no request.
func New(opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("regclient: New: %w", err)
	}
	base := o.transport
	var own *http.Transport
	if base == nil {
		own = newDefaultTransport(o.timeouts)
		base = own
	}
	base = agentTransport{inner: base, agent: userAgent}
	c := &Client{
		base: base, own: own, keychain: o.keychain, auth: o.auth, retry: o.retry, timeouts: o.timeouts,
		insecure: map[string]bool{}, authed: map[string]login{}, limits: newRateLimits(o.now), down: newDownHosts(o.now),
	}
	if c.keychain == nil {
		c.keychain = authn.DefaultKeychain
	}
	for _, h := range o.insecure {
		c.insecure[h] = true
	}
	return c, nil
}

// userAgent is the User-Agent of every request.
const userAgent = "buildcache"

// agentTransport sets the client's User-Agent on every request, logins
// and token requests included: go-containerregistry's login transport
// puts its own on the requests it wraps, and this one sits beneath it.
type agentTransport struct {
	inner http.RoundTripper
	agent string
}

func (a agentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("User-Agent") != a.agent {
		req = req.Clone(req.Context()) // a RoundTripper must not change its request
		req.Header.Set("User-Agent", a.agent)
	}
	return a.inner.RoundTrip(req)
}

// Request is one call of the distribution API, for Do. Repo, Kind and Ref
// make its URL (Client.URL); Method defaults to nothing and must be set.
type Request struct {
	Op     string // names it in errors ("HEAD index"); default Method and Kind ("GET blob")
	Method string
	Repo   name.Repository
	Kind   string // "manifests" or "blobs"
	Ref    string // a tag, a digest, or "uploads/"
	URL    string // an absolute URL instead of Kind and Ref (an upload's Location); errors still name Kind and Ref
	Push   bool   // needs push scope; pull scope otherwise
	Accept string
	Header http.Header
	Body   []byte    // sent again on every try
	Stream io.Reader // sent once: a request with a Stream is neither retried nor sent again after a login
	Size   int64     // of Stream; -1 sends it chunked
	OK     []int     // statuses handed to the caller, who closes the body; default 200
	Once   bool      // no retries
}

// Scheme is how the client speaks to reg, "http" or "https": plain HTTP to a loopback
// registry ("localhost", 127.0.0.0/8, ::1) and to those
// WithInsecureRegistries names, HTTPS to every other, private addresses
// included, as Docker and containerd do. (go-containerregistry's
// name.Registry.Scheme picks plain HTTP for RFC 1918 addresses too, which
// would send credentials in clear across a network; it is not used.)
func (c *Client) Scheme(reg name.Registry) string {
	if c.insecure[reg.RegistryStr()] || loopback(reg.RegistryStr()) {
		return "http"
	}
	return "https"
}

// loopback reports whether a registry's "host[:port]" is this machine.
func loopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// normalize marks repo's registry insecure when the client speaks plain
// HTTP to it, so that go-containerregistry's login may too.
func (c *Client) normalize(repo name.Repository) name.Repository {
	if c.Scheme(repo.Registry) == "http" && repo.Registry.Scheme() != "http" {
		if reg, err := name.NewRegistry(repo.RegistryStr(), name.Insecure); err == nil {
			repo.Registry = reg
		}
	}
	return repo
}

// URL is the address of ref ("latest", a digest, "uploads/") of kind
// ("manifests" or "blobs") in repo, over the scheme the client speaks to
// repo's registry.
func (c *Client) URL(repo name.Repository, kind, ref string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", c.Scheme(repo.Registry), repo.RegistryStr(), repo.RepositoryStr(), kind, ref)
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

func (c *Client) transport(key string) (http.RoundTripper, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.authed[key]; ok {
		return l.rt, l.gen
	}
	return c.base, 0
}

// Do sends r, logging in on the first 401 and retrying 429, 5xx and
// broken connections as the retry policy says. A status not in r.OK is a
// *RemoteError wrapping the registry's *transport.Error; the caller closes
// the body of any other response. Each try is bounded by the Timeouts: a
// try that runs into one is a broken connection, and so is a returned
// body whose Read waits longer than the Stall bound. A 429 or 5xx whose
// Retry-After is longer than the retry policy's longest wait is not
// retried; a 5xx with a Retry-After that ends the request makes its
// registry known to be failing until then (KnownDown). Under WithFallback
// the request gives up within the fallback budget.
func (c *Client) Do(ctx context.Context, r Request) (*http.Response, error) {
	where := c.URL(r.Repo, r.Kind, r.Ref)
	target := cmp.Or(r.URL, where)
	op := cmp.Or(r.Op, r.Method+" "+strings.TrimSuffix(r.Kind, "s"))
	ok := r.OK
	if len(ok) == 0 {
		ok = []int{http.StatusOK}
	}
	attempts := c.retry.attempts
	host := r.Repo.RegistryStr()
	fb := fallbackOf(ctx)
	if s, down := c.down.isDown(host); down {
		if fb != nil && s.costly() {
			return nil, &RemoteError{Op: op, URL: where, Status: s.status, Err: &KnownDownError{Host: host, Until: s.until, Err: s.cause}}
		}
		attempts = 1
	}
	if r.Once || r.Stream != nil {
		attempts = 1
	}
	key := scopeKey(r.Repo, r.Push)
	wait := c.retry.start()
	loggedIn := false
	for attempt := 1; ; attempt++ {
		rt, gen := c.transport(key)
		resp, err := c.try(ctx, rt, r, target, fb.bounds(c.timeouts))
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			var redirect *redirectError
			if errors.As(err, &redirect) {
				return nil, &RemoteError{Op: op, URL: where, Status: redirect.status, Err: err}
			}
			retry := attempt < attempts && netfail.Retryable(err)
			if d := wait.next(0, false); retry && fb.allows(d) {
				if err := wait.pause(ctx, d); err != nil {
					return nil, err
				}
				continue
			}
			if netfail.Unreachable(err) {
				c.down.markDown(host, downFor, 0, err)
			}
			if retry {
				err = fb.gaveUp(err)
			}
			return nil, &RemoteError{Op: op, URL: where, Err: err}
		}
		c.limits.observe(host, resp)
		if !retryableStatus(resp.StatusCode) {
			c.down.markUp(host) // an answer, not a failure
		}
		switch {
		case slices.Contains(ok, resp.StatusCode):
			return resp, nil
		case resp.StatusCode == http.StatusUnauthorized && !loggedIn && r.Stream == nil:
			challenge := challengeOf(resp, r.Repo)
			Drain(resp)
			loggedIn = true
			if err := c.login(ctx, r.Repo, r.Push, gen, challenge); err != nil {
				return nil, err
			}
			attempt-- // the challenge is not a failure
			continue
		case retryableStatus(resp.StatusCode):
			ra, hasRA := retryAfter(resp.Header.Get("Retry-After"), time.Now())
			budgetCut := false
			if attempt < attempts && (!hasRA || ra <= c.retry.maxWait) {
				if d := wait.next(ra, hasRA); fb.allows(d) {
					Drain(resp)
					if err := wait.pause(ctx, d); err != nil {
						return nil, err
					}
					continue
				}
				budgetCut = true
			} else if hasRA && !fb.allows(ra) {
				budgetCut = true
			}
			err = transport.CheckError(resp, ok...)
			Drain(resp)
			if hasRA && resp.StatusCode >= 500 {
				// The registry said when to come back: until then, no
				// request of a caller with a cached copy waits for it.
				c.down.markDown(host, ra, resp.StatusCode, err)
			}
			if budgetCut {
				err = fb.gaveUp(err)
			}
			return nil, &RemoteError{Op: op, URL: where, Status: resp.StatusCode, Err: err}
		}
		err = transport.CheckError(resp, ok...)
		Drain(resp)
		return nil, &RemoteError{Op: op, URL: where, Status: resp.StatusCode, Err: err}
	}
}

// try sends r once through rt under a watchdog: the answer's headers must
// come within the ResponseHeader bound of the request being sent, and its
// body (returned wrapped) must keep moving, as bounds say.
func (c *Client) try(ctx context.Context, rt http.RoundTripper, r Request, url string, bounds Timeouts) (*http.Response, error) {
	wd := netwait.New(ctx, bounds.ResponseHeader, bounds.Stall)
	req, err := c.newRequest(wd.Context(), r, url, wd)
	if err != nil {
		wd.Release()
		return nil, err
	}
	wd.Start()
	resp, err := (&http.Client{Transport: rt, CheckRedirect: checkRedirect}).Do(req)
	wd.GotAnswer()
	if err != nil {
		err = wd.Explain(err)
		wd.Release()
		return nil, err
	}
	resp.Body = wd.Body(resp.Body)
	return resp, nil
}

// maxRedirects is as many redirects as net/http follows by default.
const maxRedirects = 10

// checkRedirect follows up to maxRedirects redirects to http or https
// URLs. A loop, or a redirect anywhere else (file://), is the registry's
// answer, an error of its own, not an outage.
func checkRedirect(req *http.Request, via []*http.Request) error {
	status := 0
	if req.Response != nil {
		status = req.Response.StatusCode
	}
	switch {
	case len(via) >= maxRedirects:
		return &redirectError{status: status, why: fmt.Sprintf("more than %d redirects", maxRedirects)}
	case req.URL.Scheme != "http" && req.URL.Scheme != "https":
		return &redirectError{status: status, why: fmt.Sprintf("a redirect to a %q URL", req.URL.Scheme)}
	}
	return nil
}

// redirectError is a redirect the client refuses to follow.
type redirectError struct {
	status int // of the redirect
	why    string
}

func (e *redirectError) Error() string { return "refused " + e.why }

func (c *Client) newRequest(ctx context.Context, r Request, url string, wd *netwait.Watchdog) (*http.Request, error) {
	var body io.Reader
	switch {
	case r.Stream != nil:
		body = wd.Upload(r.Stream)
	case r.Body != nil:
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, url, body)
	if err != nil {
		return nil, err
	}
	if r.Stream != nil {
		req.ContentLength = r.Size
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	if r.Accept != "" {
		req.Header.Set("Accept", r.Accept)
	}
	return req, nil
}

// Drain reads what is left of resp's body, up to 64 KiB, and closes it,
// so that its connection can carry the next request.
func Drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// Close closes the idle connections of the transport the client made
// (not those of one given with WithTransport). The Client stays usable:
// a later request opens a new connection. It returns nil.
func (c *Client) Close() error {
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
	return nil
}
