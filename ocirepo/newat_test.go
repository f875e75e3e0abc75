package ocirepo_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/ocirepo"
	"github.com/buildcache/buildcache/regclient"
)

// hostRecorder asks for credentials (401) and answers requests that bring
// some with 404, and remembers the hosts asked, so a test sees where a
// Cache would have gone.
type hostRecorder struct {
	mu    sync.Mutex
	hosts map[string]bool
}

func (h *hostRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.hosts[r.URL.Host] = true
	h.mu.Unlock()
	if r.Header.Get("Authorization") == "" {
		return &http.Response{StatusCode: http.StatusUnauthorized, Body: http.NoBody, Request: r,
			Header: http.Header{"Www-Authenticate": {`Basic realm="test"`}}}, nil
	}
	return &http.Response{StatusCode: http.StatusNotFound, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

// keychainRecorder remembers which registries credentials were asked for.
type keychainRecorder struct {
	mu         sync.Mutex
	registries map[string]bool
}

func (k *keychainRecorder) Resolve(r authn.Resource) (authn.Authenticator, error) {
	k.mu.Lock()
	k.registries[r.RegistryStr()] = true
	k.mu.Unlock()
	return &authn.Basic{Username: "u", Password: "p"}, nil
}

// TestNewAtSingleLabelHost: a registry whose host is a single
// label ("harbor") is that registry, for requests and for credentials;
// New's reference rules would make it Docker Hub's.
func TestNewAtSingleLabelHost(t *testing.T) {
	rt := &hostRecorder{hosts: map[string]bool{}}
	kc := &keychainRecorder{registries: map[string]bool{}}
	client, err := regclient.New(regclient.WithTransport(rt), regclient.WithKeychain(kc), regclient.WithRetry(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ocirepo.NewAt("harbor", "team/cache", ocirepo.WithClient(client))
	if err != nil {
		t.Fatal(err)
	}
	// Read back as a reference (BuildKit's ref=), "harbor/team/cache"
	// would be Docker Hub's; the explicit default port keeps the host.
	if got := c.Repository(); got != "harbor:443/team/cache" {
		t.Fatalf("Repository() = %q, want harbor:443/team/cache", got)
	}
	_, _ = c.Stat(t.Context(), cachetest.NewBlob(1, 10).Digest)
	rt.mu.Lock()
	kc.mu.Lock()
	defer rt.mu.Unlock()
	defer kc.mu.Unlock()
	if len(rt.hosts) == 0 {
		t.Fatal("no request was made")
	}
	for h := range rt.hosts {
		if h != "harbor" {
			t.Errorf("a request went to %q, want only harbor", h)
		}
	}
	if len(kc.registries) == 0 {
		t.Fatal("no credentials were asked for")
	}
	for r := range kc.registries {
		if r != "harbor" {
			t.Errorf("credentials were asked for %q, want only harbor", r)
		}
	}

	// New keeps the reference rules, as documented.
	hub, err := ocirepo.New("harbor/team/cache")
	if err != nil {
		t.Fatal(err)
	}
	if got := hub.Repository(); got != "index.docker.io/harbor/team/cache" {
		t.Fatalf("New(harbor/team/cache).Repository() = %q, want Docker Hub's", got)
	}
}

func TestNewAtRejects(t *testing.T) {
	for _, tc := range []struct{ host, repo, want string }{
		{"", "x", "no registry host"},
		{"harbor/x", "y", "invalid registry host"},
		{"harbor", "", "path component"},
		{"harbor", "a//b", "path component"},
		{"harbor", "a/../b", "path component"},
		{"harbor", "./b", "path component"},
		{"harbor", "/b", "path component"},
		{"harbor", "Team", "invalid repository"},
		{"harbor", strings.Repeat("a", 300), "invalid repository"},
	} {
		_, err := ocirepo.NewAt(tc.host, tc.repo)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewAt(%q, %q) = %v, want an error saying %q", tc.host, tc.repo, err, tc.want)
		}
	}
	if _, err := ocirepo.NewAt("localhost:5000", "x", ocirepo.WithIndexTag("")); err == nil {
		t.Error("an option's error was not returned")
	}
}
