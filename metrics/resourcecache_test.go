package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/metrics"
)

var errGone = errors.New("gone")

// Three Gets of one key (one load, two hits), a Get whose load fails with
// a negative error and one more of it (a negative hit), an Invalidate.
func TestResourceCacheCollector(t *testing.T) {
	c, err := memory.New[string, int](memory.WithTTL(time.Hour),
		memory.WithNegativeTTL(time.Hour, func(err error) bool { return errors.Is(err, errGone) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := t.Context()
	for range 3 {
		if _, err := c.Get(ctx, "repo", func(context.Context) (int, error) { return 42, nil }); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := c.Get(ctx, "missing", func(context.Context) (int, error) { return 0, errGone }); !errors.Is(err, errGone) {
			t.Fatalf("Get missing: %v", err)
		}
	}
	c.Invalidate("repo")

	want := `
# HELP buildcache_resource_cache_coalesced_total Gets that waited for a load another caller started.
# TYPE buildcache_resource_cache_coalesced_total counter
buildcache_resource_cache_coalesced_total{cache="repos"} 0
# HELP buildcache_resource_cache_evictions_total Entries evicted for room or expiry, or refused admission.
# TYPE buildcache_resource_cache_evictions_total counter
buildcache_resource_cache_evictions_total{cache="repos"} 0
# HELP buildcache_resource_cache_hits_total Gets answered with a cached value.
# TYPE buildcache_resource_cache_hits_total counter
buildcache_resource_cache_hits_total{cache="repos"} 2
# HELP buildcache_resource_cache_invalidations_total Calls of Invalidate.
# TYPE buildcache_resource_cache_invalidations_total counter
buildcache_resource_cache_invalidations_total{cache="repos"} 1
# HELP buildcache_resource_cache_load_errors_total Loads that returned an error (negative ones included) or panicked.
# TYPE buildcache_resource_cache_load_errors_total counter
buildcache_resource_cache_load_errors_total{cache="repos"} 1
# HELP buildcache_resource_cache_loads_total Load functions called, by Get and Refresh.
# TYPE buildcache_resource_cache_loads_total counter
buildcache_resource_cache_loads_total{cache="repos"} 2
# HELP buildcache_resource_cache_misses_total Gets that found no fresh entry, including those that joined a load.
# TYPE buildcache_resource_cache_misses_total counter
buildcache_resource_cache_misses_total{cache="repos"} 2
# HELP buildcache_resource_cache_negative_hits_total Gets answered with a cached (negative) error.
# TYPE buildcache_resource_cache_negative_hits_total counter
buildcache_resource_cache_negative_hits_total{cache="repos"} 1
`
	if err := testutil.CollectAndCompare(metrics.NewResourceCacheCollector("repos", c), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
