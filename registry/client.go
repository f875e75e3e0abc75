package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// manifestAccept lists the manifest types we understand, for Accept.
var manifestAccept = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
}, ", ")

// client speaks the small part of the distribution API a resolver needs:
// HEAD and GET of manifests, GET of blobs. It sends requests without
// credentials first and authenticates only when a registry answers 401, so
// an anonymous registry costs no extra round trip (no /v2/ ping) and a
// revalidation is exactly one HEAD.
type client struct {
	base     http.RoundTripper
	keychain authn.Keychain
	auth     authn.Authenticator // overrides keychain when set
	retry    retryPolicy
	insecure map[string]bool
	agent    string

	mu     sync.Mutex
	authed map[string]http.RoundTripper // by repository name
}

type retryPolicy struct {
	attempts int           // total tries, >= 1
	backoff  time.Duration // first wait; doubles
	maxWait  time.Duration // cap on one wait, Retry-After included
	sleep    func(context.Context, time.Duration) error
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// RemoteError is a registry's failure to answer: unreachable, timed out,
// or an HTTP status it should not have sent. It is what stale-if-error
// serves a cached copy through.
type RemoteError struct {
	Op     string // "HEAD manifest", "GET blob", ...
	URL    string
	Status int   // 0 when no response arrived
	Err    error // the transport error or the registry's error body
}

func (e *RemoteError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("registry: %s %s: %d %s: %v", e.Op, e.URL, e.Status, http.StatusText(e.Status), e.Err)
	}
	return fmt.Sprintf("registry: %s %s: %v", e.Op, e.URL, e.Err)
}

func (e *RemoteError) Unwrap() error { return e.Err }

// Temporary reports whether the failure is the registry's or the
// network's (unreachable, 5xx, 429) rather than the request's (404, 401).
func (e *RemoteError) Temporary() bool {
	return e.Status == 0 || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

func (c *client) url(repo name.Repository, kind, ref string) string {
	scheme := repo.Registry.Scheme()
	if c.insecure[repo.RegistryStr()] {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", scheme, repo.RegistryStr(), repo.RepositoryStr(), kind, ref)
}

func (c *client) transportFor(repo name.Repository) http.RoundTripper {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.authed[repo.Name()]; ok {
		return t
	}
	return c.base
}

// authenticate builds a transport that answers the registry's challenge
// (basic or bearer token), using go-containerregistry's transport package.
func (c *client) authenticate(ctx context.Context, repo name.Repository) (http.RoundTripper, error) {
	auth := c.auth
	if auth == nil {
		var err error
		if auth, err = authn.Resolve(ctx, c.keychain, repo); err != nil {
			return nil, fmt.Errorf("registry: credentials for %s: %w", repo, err)
		}
	}
	t, err := transport.NewWithContext(ctx, repo.Registry, auth, c.base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, &RemoteError{Op: "authenticate", URL: repo.RegistryStr(), Err: err}
	}
	c.mu.Lock()
	c.authed[repo.Name()] = t
	c.mu.Unlock()
	return t, nil
}

// do sends one request with retries; the caller closes the body of a
// successful response. Statuses other than 200 become *RemoteError.
func (c *client) do(ctx context.Context, repo name.Repository, method, kind, ref, accept string) (*http.Response, error) {
	url := c.url(repo, kind, ref)
	op := method + " " + strings.TrimSuffix(kind, "s")
	triedAuth := false
	wait := c.retry.backoff
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			return nil, fmt.Errorf("registry: %s: %w", op, err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if c.agent != "" {
			req.Header.Set("User-Agent", c.agent)
		}
		resp, err := (&http.Client{Transport: c.transportFor(repo)}).Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			rerr := &RemoteError{Op: op, URL: url, Err: err}
			if attempt < c.retry.attempts && retryableNetErr(err) {
				if err := c.retry.sleep(ctx, wait); err != nil {
					return nil, err
				}
				wait = min(wait*2, c.retry.maxWait)
				continue
			}
			return nil, rerr
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			return resp, nil
		case resp.StatusCode == http.StatusUnauthorized && !triedAuth:
			drain(resp)
			triedAuth = true
			if _, err := c.authenticate(ctx, repo); err != nil {
				return nil, err
			}
			attempt-- // the challenge round trip is not a failure
			continue
		case (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) && attempt < c.retry.attempts:
			d := wait
			if ra, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				d = ra
			}
			drain(resp)
			if err := c.retry.sleep(ctx, min(d, c.retry.maxWait)); err != nil {
				return nil, err
			}
			wait = min(wait*2, c.retry.maxWait)
			continue
		}
		err = transport.CheckError(resp, http.StatusOK)
		drain(resp)
		return nil, &RemoteError{Op: op, URL: url, Status: resp.StatusCode, Err: err}
	}
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
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

// retryableNetErr: connection refused or reset, timeouts, truncated
// answers. A TLS or DNS configuration error is not worth retrying.
func retryableNetErr(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, syscall.EPIPE):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}
