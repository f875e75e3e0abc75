package registry_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

// retryAfterFault answers every manifest request with status and
// Retry-After: 60.
func retryAfterFault(status int) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(status)
		return true
	}
}

// A cached image is served within the stale budget whatever the registry
// does: silent, refusing connections, 503 with Retry-After: 60, 429 with
// Retry-After: 60, with the client's default retries and timeouts (a
// silent registry cost 4 x 30 s, a 503 30 s on every request: issue 19,
// item 3). The registry is then known to be failing when another try
// would cost the budget again (silent) or it said when to come back
// (503): the next resolve serves the cached copy without asking; a
// refusing registry gets one try, a 429 its one HEAD. Each is counted,
// explained and logged.
func TestCachedImageServedWithinStaleBudget(t *testing.T) {
	for _, tc := range []struct {
		name string
		// start serves ref with an image and returns the fault to turn on.
		start func(t *testing.T) (ref string, fault func())
		// tries the registry gets on the first and the second resolve.
		first, second int
		knownDown     bool // the second resolve does not ask it
	}{
		{"silent", func(t *testing.T) (string, func()) {
			reg := testserver.StartSilentRegistry(t)
			return reg.Host + "/app:1", reg.Silence
		}, 1, 0, true},
		{"refusing", func(t *testing.T) (string, func()) {
			reg := newFakeRegistry(t)
			return reg.host + "/app:1", reg.srv.Close
		}, -1, 1, false},
		{"503 with Retry-After", func(t *testing.T) (string, func()) {
			reg := newFakeRegistry(t)
			return reg.host + "/app:1", func() { reg.setFault(retryAfterFault(http.StatusServiceUnavailable)) }
		}, 1, 0, true},
		{"429 with Retry-After", func(t *testing.T) (string, func()) {
			reg := newFakeRegistry(t)
			return reg.host + "/app:1", func() { reg.setFault(retryAfterFault(http.StatusTooManyRequests)) }
		}, 1, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, fault := tc.start(t)
			push(t, ref, twoPlatformIndex(t, 256))
			store := openStore(t)
			if _, err := newResolver(t, store).Resolve(t.Context(), ref); err != nil {
				t.Fatal(err)
			}
			clock := testclock.New(time.Now())
			ct := &countingTransport{counts: map[string]int{}}
			var log bytes.Buffer // written before Resolve returns, read after
			r := newResolver(t, store,
				// The client's defaults, stated: 4 tries, 200ms backoff doubling, 30s for headers.
				withClient(t, regclient.WithTransport(ct), regclient.WithRetry(4, 200*time.Millisecond, 10*time.Second), regclient.WithClock(clock.Now)),
				registry.WithStaleBudget(300*time.Millisecond), registry.WithClock(clock.Now),
				registry.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
			fault()

			res, err := resolveBounded(t, t.Context(), r, ref)
			tries := ct.take()["HEAD"]
			if err != nil || res.Source != cache.Stale {
				t.Fatalf("first resolve: %+v, %v; want the cached copy, Stale", res, err)
			}
			if (tc.first > 0 && tries != tc.first) || tries < 1 || tries > 4 {
				t.Errorf("first resolve made %d tries; want %d", tries, tc.first)
			}
			if s := r.Stats(); s.StaleBudgetSpent != 1 || !strings.Contains(res.Why.Reason, "stale budget of 300ms") {
				t.Errorf("first resolve: StaleBudgetSpent %d, reason %q; want 1 and the budget named", s.StaleBudgetSpent, res.Why.Reason)
			}
			if got := strings.Count(log.String(), "level=WARN"); got != 1 || !strings.Contains(log.String(), "ref="+ref) {
				t.Errorf("log after the first resolve: %q; want one warning naming %s", log.String(), ref)
			}

			res, err = resolveBounded(t, t.Context(), r, ref)
			tries = ct.take()["HEAD"]
			if err != nil || res.Source != cache.Stale || tries != tc.second {
				t.Fatalf("second resolve: %+v, %v after %d tries; want Stale after %d", res, err, tries, tc.second)
			}
			if tc.knownDown {
				s := r.Stats()
				if s.StaleKnownDown != 1 || !strings.Contains(res.Why.Reason, "known to be failing") {
					t.Errorf("second resolve: StaleKnownDown %d, reason %q; want 1 and the reason", s.StaleKnownDown, res.Why.Reason)
				}
				if strings.Count(log.String(), "level=WARN") != 1 {
					t.Errorf("a resolve that asked nothing logged a warning: %q", log.String())
				}
				clock.Advance(61 * time.Second) // past the Retry-After, and past the 10 s a timeout keeps it down
				if res, err = resolveBounded(t, t.Context(), r, ref); err != nil || res.Source != cache.Stale || ct.take()["HEAD"] != 1 {
					t.Errorf("once known down has passed: %+v, %v; want Stale after one try", res, err)
				}
			}
		})
	}
}

// With the resolver's defaults, a 503 with Retry-After: 60 costs one
// request, not the retry policy's, and is then not asked again by a
// resolve that has a cached copy; an uncached image, which has nothing
// else to serve, still makes one try.
// On the code before issue 19 each made every try the policy allows,
// on every resolve.
func TestRetryAfterOn5xxServesTheCachedCopyAtOnce(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 256))
	push(t, reg.host+"/other:1", twoPlatformIndex(t, 256))
	store := openStore(t)
	r := newResolver(t, store)
	if _, err := r.Resolve(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	reg.setFault(retryAfterFault(http.StatusServiceUnavailable))
	reg.reset()

	for i, want := range []int{1, 0} {
		reg.reset()
		res, err := r.Resolve(t.Context(), ref)
		if err != nil || res.Source != cache.Stale || reg.count("HEAD manifests") != want {
			t.Errorf("resolve %d of a cached image: %+v, %v after %d HEADs; want Stale after %d", i+1, res, err, reg.count("HEAD manifests"), want)
		}
	}
	reg.reset()
	if _, err := r.Resolve(t.Context(), reg.host+"/other:1"); err == nil || reg.count("GET manifests") != 1 {
		t.Errorf("uncached image, 503 with Retry-After 60: %v after %d GETs; want the 503 after one", err, reg.count("GET manifests"))
	}
}

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
