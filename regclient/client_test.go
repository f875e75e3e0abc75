package regclient_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildcache/buildcache/regclient"
)

// Plain HTTP only for loopback and for registries named insecure: a
// private address gets HTTPS, whatever its port. Nothing is sent.
func TestSchemeIsHTTPSUnlessLoopbackOrInsecure(t *testing.T) {
	for _, tt := range []struct {
		repo     string
		insecure []string
		want     string
	}{
		{"10.1.2.3/app", nil, "https"},
		{"10.1.2.3:443/app", nil, "https"},
		{"192.168.1.20:5000/app", nil, "https"},
		{"172.16.0.9:5000/app", nil, "https"},
		{"harbor.example.com/app", nil, "https"},
		{"localhost/app", nil, "http"},
		{"localhost:5000/app", nil, "http"},
		{"127.0.0.1:5000/app", nil, "http"},
		{"127.1.2.3:5000/app", nil, "http"},
		{"[::1]:5000/app", nil, "http"},
		{"192.168.1.20:5000/app", []string{"192.168.1.20:5000"}, "http"},
		{"192.168.1.20:5001/app", []string{"192.168.1.20:5000"}, "https"},
		{"cache.example.com:5000/app", []string{"cache.example.com:5000"}, "http"},
	} {
		c, err := regclient.New(regclient.WithInsecureRegistries(tt.insecure...))
		if err != nil {
			t.Fatal(err)
		}
		repo, err := name.NewRepository(tt.repo)
		if err != nil {
			t.Fatal(err)
		}
		host, _, _ := strings.Cut(tt.repo, "/")
		if got, want := c.URL(repo, "manifests", "latest"), tt.want+"://"+host+"/v2/app/manifests/latest"; got != want {
			t.Errorf("%s (insecure %v): URL %s, want %s", tt.repo, tt.insecure, got, want)
		}
		if got := c.Scheme(repo.Registry); got != tt.want {
			t.Errorf("%s (insecure %v): Scheme %s, want %s", tt.repo, tt.insecure, got, tt.want)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []regclient.Option
		want string // in the error; "" for none
	}{
		{"defaults", nil, ""},
		{"auth and keychain", []regclient.Option{regclient.WithAuth(authn.Anonymous), regclient.WithKeychain(authn.DefaultKeychain)}, "not both"},
		{"nil auth", []regclient.Option{regclient.WithAuth(nil)}, "WithAuth(nil)"},
		{"nil keychain", []regclient.Option{regclient.WithKeychain(nil)}, "WithKeychain(nil)"},
		{"nil transport", []regclient.Option{regclient.WithTransport(nil)}, "WithTransport(nil)"},
		{"nil clock", []regclient.Option{regclient.WithClock(nil)}, "WithClock(nil)"},
		{"no attempts", []regclient.Option{regclient.WithRetry(0, 0, 0)}, "attempts >= 1"},
		{"some timeouts", []regclient.Option{regclient.WithTimeouts(regclient.Timeouts{Stall: time.Minute})}, ""},
		{"negative timeout", []regclient.Option{regclient.WithTimeouts(regclient.Timeouts{ResponseHeader: -1})}, "negative timeout"},
		// A caller's transport keeps its own dial and TLS bounds...
		{"dial bound and a transport", []regclient.Option{regclient.WithTransport(http.DefaultTransport), regclient.WithTimeouts(regclient.Timeouts{Connect: time.Second})}, "WithTransport's"},
		// ...but the client's own bounds apply to it.
		{"header bound and a transport", []regclient.Option{regclient.WithTransport(http.DefaultTransport), regclient.WithTimeouts(regclient.Timeouts{ResponseHeader: time.Second})}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := regclient.New(tt.opts...)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("New = %v, want a client", err)
			case tt.want == "" && c.Close() != nil:
				t.Error("Close failed")
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("New = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}
