package metrics_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/metrics"
	"github.com/buildcache/buildcache/registry"
)

// resolveThreeWays pushes a two-platform image to an in-process registry
// and resolves it cold, warm (PullAlways: one HEAD) and warm
// (PullIfNotPresent: no request), through a resolver over a localfs store.
func resolveThreeWays(t *testing.T) (*registry.Resolver, *localfs.Store) {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/flink:1.14.5"
	img := testimage.ForTest(t)
	img.Push(ref, img.RandomIndex([]string{"linux/amd64", "linux/arm64"}, 1024, 2))

	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := registry.NewResolver(store)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []cache.PullPolicy{cache.PullAlways, cache.PullAlways, cache.PullIfNotPresent} {
		if _, err := r.Resolve(t.Context(), ref, cache.WithPolicy(p)); err != nil {
			t.Fatal(err)
		}
	}
	return r, store
}

func TestResolverCollector(t *testing.T) {
	r, _ := resolveThreeWays(t)
	col := metrics.NewResolverCollector(r)
	// The index, and for the resolver's default platform (one) its
	// manifest, config and two layers.
	want := `
# HELP buildcache_resolver_fetched_blobs_total Blobs, manifests included, downloaded from registries.
# TYPE buildcache_resolver_fetched_blobs_total counter
buildcache_resolver_fetched_blobs_total 5
# HELP buildcache_resolver_resolutions_total Resolutions by where the image came from: "hit" (no request), "revalidated" (one HEAD confirmed the cached digest), "pulled" (something was downloaded), "stale" (the registry failed and the cached copy was served), "reserved" (the cached copy was served to keep within a rate-limit reserve). Concurrent calls that shared one resolution count once.
# TYPE buildcache_resolver_resolutions_total counter
buildcache_resolver_resolutions_total{source="hit"} 1
buildcache_resolver_resolutions_total{source="pulled"} 1
buildcache_resolver_resolutions_total{source="reserved"} 0
buildcache_resolver_resolutions_total{source="revalidated"} 1
buildcache_resolver_resolutions_total{source="stale"} 0
# HELP buildcache_resolver_resolves_total Resolve calls that returned an image; concurrent calls that shared one resolution count each.
# TYPE buildcache_resolver_resolves_total counter
buildcache_resolver_resolves_total 3
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"buildcache_resolver_fetched_blobs_total", "buildcache_resolver_resolutions_total", "buildcache_resolver_resolves_total"); err != nil {
		t.Error(err)
	}
	// The byte count depends on how well random layers compress: at
	// least the two 1 KiB layers' worth, and what Stats says.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	got := gatherValue(t, reg, "buildcache_resolver_fetched_bytes_total", nil)
	if want := float64(r.Stats().BytesFetched); got != want || got < 2*1024 {
		t.Errorf("fetched bytes = %v, want %v (at least 2 KiB)", got, want)
	}
}

// TestResolverCollectorRateLimits: a registry that states Docker Hub's
// headers shows up per host in the rate_limit gauges.
func TestResolverCollectorRateLimits(t *testing.T) {
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit-Limit", "100;w=21600")
		w.Header().Set("RateLimit-Remaining", "76;w=21600")
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img := testimage.ForTest(t)
	img.Push(host+"/app:v1", img.RandomIndex([]string{"linux/amd64"}, 512, 1))
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := registry.NewResolver(store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(t.Context(), host+"/app:v1"); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`
# HELP buildcache_resolver_rate_limit_remaining_requests Requests left in the registry's current window, as its last RateLimit-Remaining header said.
# TYPE buildcache_resolver_rate_limit_remaining_requests gauge
buildcache_resolver_rate_limit_remaining_requests{registry=%[1]q} 76
# HELP buildcache_resolver_rate_limit_requests Requests the registry allows per window, as its last RateLimit-Limit header said (Docker Hub counts manifest GETs, not HEADs).
# TYPE buildcache_resolver_rate_limit_requests gauge
buildcache_resolver_rate_limit_requests{registry=%[1]q} 100
# HELP buildcache_resolver_rate_limit_window_seconds The registry's rate-limit window (the ;w= of its headers); 0 when it states none.
# TYPE buildcache_resolver_rate_limit_window_seconds gauge
buildcache_resolver_rate_limit_window_seconds{registry=%[1]q} 21600
`, host)
	if err := testutil.CollectAndCompare(metrics.NewResolverCollector(r), strings.NewReader(want),
		"buildcache_resolver_rate_limit_requests", "buildcache_resolver_rate_limit_remaining_requests", "buildcache_resolver_rate_limit_window_seconds"); err != nil {
		t.Error(err)
	}
}

// statsOnly reports fixed resolver stats.
type statsOnly cache.ResolverStats

func (s statsOnly) Stats() cache.ResolverStats { return cache.ResolverStats(s) }

// Why a cached copy was served stale, and the 404s answered from memory,
// are exported (issue 19, items 3 and 4: failures are visible).
func TestResolverCollectorFallbackCounters(t *testing.T) {
	col := metrics.NewResolverCollector(statsOnly{Stale: 5, StaleBudgetSpent: 2, StaleKnownDown: 3, NotFoundRemembered: 7})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	for name, want := range map[string]float64{
		"buildcache_resolver_stale_budget_spent_total":   2,
		"buildcache_resolver_stale_known_down_total":     3,
		"buildcache_resolver_not_found_remembered_total": 7,
	} {
		if got := gatherValue(t, reg, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
