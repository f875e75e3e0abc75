package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

// hangGuard bounds a call that must not hang: generous, as only a hang
// should trip it.
const hangGuard = 30 * time.Second

// short are timeouts a test can afford to run into, for a resolver that
// only meets the fault: a healthy request under load may take longer.
func short(t testing.TB) registry.Option {
	return withClient(t, regclient.WithTimeouts(regclient.Timeouts{ResponseHeader: 100 * time.Millisecond, Stall: 100 * time.Millisecond}))
}

// resolveBounded runs Resolve and fails the test if it has not returned
// within hangGuard.
func resolveBounded(t *testing.T, ctx context.Context, r *registry.Resolver, ref string) (*cache.ResolvedImage, error) {
	t.Helper()
	type result struct {
		res *cache.ResolvedImage
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := r.Resolve(ctx, ref)
		done <- result{res, err}
	}()
	select {
	case got := <-done:
		return got.res, got.err
	case <-time.After(hangGuard):
		t.Fatalf("Resolve(%s) has not returned after %v", ref, hangGuard)
		return nil, nil
	}
}

// A cached image whose registry accepts connections and never answers is
// served Stale once the response-header bound runs out.
func TestSilentRegistryServesStale(t *testing.T) {
	reg := testserver.StartSilentRegistry(t)
	ref := reg.Host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 256))
	store := openStore(t)
	if _, err := newResolver(t, store).Resolve(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, store, short(t))

	reg.Silence()
	res, err := resolveBounded(t, t.Context(), r, ref)
	if err != nil {
		t.Fatalf("Resolve with a silent registry: %v, want the cached copy, Stale", err)
	}
	var re *regclient.RemoteError
	var ne net.Error
	if res.Source != cache.Stale || !errors.As(res.RemoteErr, &re) || !errors.As(res.RemoteErr, &ne) || !ne.Timeout() {
		t.Errorf("Source %v, RemoteErr %v; want Stale and a RemoteError that is a timeout", res.Source, res.RemoteErr)
	}

	// Not cached: offline.
	_, err = resolveBounded(t, t.Context(), r, reg.Host+"/other:1")
	if !errors.Is(err, cache.ErrOffline) {
		t.Errorf("uncached image, silent registry = %v, want ErrOffline", err)
	}
}

// A registry that sends an answer's headers and then stops sending its
// body is a broken connection too: the cached image is served Stale.
func TestStalledBodyServesStale(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 256))
	store := openStore(t)
	if _, err := newResolver(t, store).Resolve(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, store, short(t))

	released := make(chan struct{})
	t.Cleanup(func() { close(released) })
	reg.setFault(func(w http.ResponseWriter, req *http.Request) bool {
		if !strings.Contains(req.URL.Path, "/manifests/") {
			return false
		}
		if req.Method == http.MethodHead { // no digest: the resolver GETs the manifest
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			w.WriteHeader(http.StatusOK)
			return true
		}
		w.Header().Set("Content-Length", "4096")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"schemaVersion":`))
		w.(http.Flusher).Flush()
		select {
		case <-req.Context().Done():
		case <-released:
		}
		return true
	})
	res, err := resolveBounded(t, t.Context(), r, ref)
	if err != nil {
		t.Fatalf("Resolve with a stalled body: %v, want the cached copy, Stale", err)
	}
	var ne net.Error
	if res.Source != cache.Stale || !errors.As(res.RemoteErr, &ne) || !ne.Timeout() {
		t.Errorf("Source %v, RemoteErr %v; want Stale and a timeout", res.Source, res.RemoteErr)
	}
}

// A context's deadline shorter than the timeouts ends the call with the
// context's error, not a timeout, and serves nothing stale.
func TestContextDeadlineBeatsTimeouts(t *testing.T) {
	reg := testserver.StartSilentRegistry(t)
	ref := reg.Host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 256))
	r := newResolver(t, openStore(t), withClient(t, regclient.WithTimeouts(regclient.Timeouts{ResponseHeader: 20 * time.Second, Stall: 20 * time.Second})))
	if _, err := r.Resolve(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	reg.Silence()
	for _, ref := range []string{ref, reg.Host + "/other:1"} {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		_, err := resolveBounded(t, ctx, r, ref)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Resolve(%s) past its context's deadline = %v, want context.DeadlineExceeded", ref, err)
		}
	}
}

// A redirect loop, or a redirect to a file:// URL, is the registry's
// answer, an error of its own: not an outage (ErrOffline), not served
// Stale, not retried.
func TestRefusedRedirectIsARegistryError(t *testing.T) {
	for _, tt := range []struct {
		name     string
		location func(r *http.Request) string
	}{
		{"loop", func(r *http.Request) string { return r.URL.String() }},
		{"file", func(*http.Request) string { return "file:///etc/passwd" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry(t)
			ref := reg.host + "/app:1"
			push(t, ref, twoPlatformIndex(t, 256))
			r := newResolver(t, openStore(t))
			if _, err := r.Resolve(t.Context(), ref); err != nil {
				t.Fatal(err)
			}
			reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				http.Redirect(w, r, tt.location(r), http.StatusFound)
				return true
			})
			for _, ref := range []string{ref, reg.host + "/other:1"} { // cached, and not
				reg.reset()
				_, err := r.Resolve(t.Context(), ref)
				var re *regclient.RemoteError
				if err == nil || errors.Is(err, cache.ErrOffline) || !errors.As(err, &re) || re.Status != http.StatusFound || re.Temporary() {
					t.Errorf("Resolve(%s) redirected (%s) = %v, want a RemoteError with status 302, not offline, not stale", ref, tt.name, err)
				}
				if n := reg.count("HEAD manifests") + reg.count("GET manifests"); n > 11 {
					t.Errorf("%d manifest requests: the refused redirect was retried", n)
				}
			}
		})
	}
}

// authDouble puts basic or bearer-token authentication in front of a
// fakeRegistry and records every request's path and User-Agent.
type authDouble struct {
	bearer bool
	reg    *fakeRegistry

	mu       sync.Mutex
	paths    []string // "HEAD /v2/app/manifests/1", "GET /token"
	agents   map[string]bool
	tokenHit func() // called as the token server is asked, before it answers
}

func newAuthDouble(t *testing.T, bearer bool) *authDouble {
	a := &authDouble{bearer: bearer, reg: newFakeRegistry(t), agents: map[string]bool{}}
	a.reg.setFault(a.serve)
	return a
}

func (a *authDouble) serve(w http.ResponseWriter, r *http.Request) bool {
	a.mu.Lock()
	a.paths = append(a.paths, r.Method+" "+r.URL.Path)
	a.agents[r.UserAgent()] = true
	tokenHit := a.tokenHit
	a.mu.Unlock()
	if r.URL.Path == "/token" {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci" || p != "s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		if tokenHit != nil {
			tokenHit()
		}
		fmt.Fprint(w, `{"token": "t0ken"}`)
		return true
	}
	if a.bearer && r.Header.Get("Authorization") == "Bearer t0ken" {
		return false
	}
	if u, p, ok := r.BasicAuth(); !a.bearer && ok && u == "ci" && p == "s3cret" {
		return false
	}
	if a.bearer {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test",scope="repository:app:pull"`, r.Host))
	} else {
		w.Header().Set("WWW-Authenticate", `Basic realm="buildcache-test"`)
	}
	w.WriteHeader(http.StatusUnauthorized)
	return true
}

func (a *authDouble) reset() {
	a.mu.Lock()
	a.paths, a.agents = nil, map[string]bool{}
	a.mu.Unlock()
}

func (a *authDouble) userAgents() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.agents
}

func (a *authDouble) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.paths...)
}

// An authenticated revalidation by a new process (a new Resolver, no
// login yet) is the 401 and the HEAD that answers it: the 401's challenge
// logs in, with no GET /v2/ to ask for it again. A bearer token adds the
// token server's request. Every request carries buildcache's User-Agent.
func TestAuthenticatedRevalidationIsTwoRequests(t *testing.T) {
	for _, tt := range []struct {
		name   string
		bearer bool
		want   []string
	}{
		{"basic", false, []string{"HEAD /v2/app/manifests/1", "HEAD /v2/app/manifests/1"}},
		{"bearer", true, []string{"HEAD /v2/app/manifests/1", "GET /token", "HEAD /v2/app/manifests/1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthDouble(t, tt.bearer)
			ref := a.reg.host + "/app:1"
			a.reg.setFault(nil)
			push(t, ref, twoPlatformIndex(t, 256))
			a.reg.setFault(a.serve)
			store := openStore(t)
			// A client of its own for each resolver, as a new process has:
			// a shared one would not log in again.
			creds := func() registry.Option {
				return withClient(t, regclient.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret"}))
			}
			if _, err := newResolver(t, store, creds()).Resolve(t.Context(), ref); err != nil {
				t.Fatal(err)
			}
			for agent := range a.userAgents() {
				if agent != "buildcache" {
					t.Errorf("pull: a request had User-Agent %q, want buildcache", agent)
				}
			}

			a.reset()
			res, err := newResolver(t, store, creds()).Resolve(t.Context(), ref)
			if err != nil || res.Source != cache.Revalidated {
				t.Fatalf("revalidation = %v, %v", res, err)
			}
			if got := a.requests(); strings.Join(got, ", ") != strings.Join(tt.want, ", ") {
				t.Errorf("revalidation sent %q, want %q", got, tt.want)
			}
			for agent := range a.userAgents() {
				if agent != "buildcache" {
					t.Errorf("revalidation: a request had User-Agent %q, want buildcache", agent)
				}
			}
		})
	}
}

// Requests, logins and token requests carry the User-Agent too with a
// caller's own transport.
func TestUserAgentWithACallersTransport(t *testing.T) {
	a := newAuthDouble(t, true)
	ref := a.reg.host + "/app:1"
	a.reg.setFault(nil)
	push(t, ref, twoPlatformIndex(t, 256))
	a.reg.setFault(a.serve)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	r := newResolver(t, openStore(t), withClient(t, regclient.WithTransport(tr), regclient.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret"})))
	if _, err := r.Resolve(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	if agents := a.userAgents(); len(agents) != 1 || !agents["buildcache"] {
		t.Errorf("User-Agents seen: %v, want only buildcache", agents)
	}
}
