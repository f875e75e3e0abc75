package registry_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

// A tag the registry does not have (a real one: docker-registry, through
// a proxy that counts what reaches it) is asked for once per TTL, by
// ResolveTop (a mirror: a docker pull asks twice) and Resolve alike; each
// answer is the registry's 404. Once the tag is pushed, it is seen when
// the TTL has passed. Issue 19, item 4: each pull of a missing tag cost
// two upstream GETs, every time.
func TestMissingTagIsRememberedForTheTTL(t *testing.T) {
	reg := testserver.StartRegistry(t)
	up := testserver.StartCountingProxy(t, reg.Host)
	ref := up.Host + "/team/app:soon"
	clock := testclock.New(time.Now())
	r := newResolver(t, openStore(t), registry.WithClock(clock.Now), registry.WithNotFoundTTL(time.Minute))

	is404 := func(err error) bool {
		var re *regclient.RemoteError
		return errors.As(err, &re) && re.Status == http.StatusNotFound
	}
	for i := range 3 {
		if _, err := r.ResolveTop(t.Context(), ref, 0); !is404(err) {
			t.Fatalf("ResolveTop %d of a missing tag: %v; want the registry's 404", i+1, err)
		}
	}
	if _, err := r.Resolve(t.Context(), ref); !is404(err) {
		t.Fatalf("Resolve of a missing tag: %v; want the registry's 404", err)
	}
	if c := up.Counts(); c.Requests() != 1 {
		t.Errorf("the registry got %+v for 4 resolves of a missing tag within the TTL; want one request", c)
	}
	if s := r.Stats(); s.NotFoundRemembered != 3 {
		t.Errorf("NotFoundRemembered %d, want 3", s.NotFoundRemembered)
	}

	d := push(t, reg.Host+"/team/app:soon", twoPlatformIndex(t, 256))
	clock.Advance(59 * time.Second)
	if _, err := r.Resolve(t.Context(), ref); !is404(err) || up.Counts().Requests() != 1 {
		t.Errorf("within the TTL, pushed meanwhile: %v after %+v; want the remembered 404, no request", err, up.Counts())
	}
	clock.Advance(time.Second)
	res, err := r.Resolve(t.Context(), ref)
	if err != nil || res.Source != cache.Pulled || res.Digest != d {
		t.Errorf("after the TTL: %+v, %v; want %s Pulled", res, err, d)
	}
}

// WithNotFoundTTL(0) remembers nothing; a bypass asks whatever is
// remembered.
func TestNotFoundTTLZeroAndBypass(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/team/app:missing"
	for _, tc := range []struct {
		name string
		opts []registry.Option
		ro   []cache.ResolveOption
	}{
		{"ttl 0", []registry.Option{registry.WithNotFoundTTL(0)}, nil},
		{"bypass", nil, []cache.ResolveOption{cache.WithBypass()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newResolver(t, openStore(t), tc.opts...)
			reg.reset()
			for range 2 {
				if _, err := r.Resolve(t.Context(), ref, tc.ro...); err == nil {
					t.Fatal("Resolve of a missing tag succeeded")
				}
			}
			if n := reg.count("GET manifests"); n != 2 {
				t.Errorf("%d GETs for two resolves; want 2", n)
			}
		})
	}
}
