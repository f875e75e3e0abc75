package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/promfamily"
)

// ResourceStatsReporter is what NewResourceCacheCollector reads: a
// *memory.Cache[K, V] of any K and V.
type ResourceStatsReporter interface {
	Stats() cache.ResourceStats
}

var resourceCacheSpecs = []promfamily.Spec[cache.ResourceStats]{
	promfamily.Counter("hits_total", "Gets answered with a cached value.", func(s cache.ResourceStats) uint64 { return s.Hits }),
	promfamily.Counter("negative_hits_total", "Gets answered with a cached (negative) error.", func(s cache.ResourceStats) uint64 { return s.NegativeHits }),
	promfamily.Counter("misses_total", "Gets that found no fresh entry, including those that joined a load.", func(s cache.ResourceStats) uint64 { return s.Misses }),
	promfamily.Counter("loads_total", "Load functions called, by Get and Refresh.", func(s cache.ResourceStats) uint64 { return s.Loads }),
	promfamily.Counter("load_errors_total", "Loads that returned an error (negative ones included) or panicked.", func(s cache.ResourceStats) uint64 { return s.LoadErrors }),
	promfamily.Counter("coalesced_total", "Gets that waited for a load another caller started.", func(s cache.ResourceStats) uint64 { return s.Coalesced }),
	promfamily.Counter("evictions_total", "Entries evicted for room or expiry, or refused admission.", func(s cache.ResourceStats) uint64 { return s.Evictions }),
	promfamily.Counter("invalidations_total", "Calls of Invalidate.", func(s cache.ResourceStats) uint64 { return s.Invalidations }),
}

// ResourceCacheCollector exports the counters of a memory.Cache (the
// ResourceCache) as the buildcache_resource_cache_* families, labelled
// cache=<name>. Create it with NewResourceCacheCollector.
type ResourceCacheCollector struct {
	c  ResourceStatsReporter
	fs []promfamily.Family[cache.ResourceStats]
}

var _ prometheus.Collector = (*ResourceCacheCollector)(nil)

// NewResourceCacheCollector returns a collector of c's Stats; name is the
// value of the cache label ("package-repositories"), different for each
// collector registered on one registry. Each scrape calls c.Stats() once.
func NewResourceCacheCollector(name string, c ResourceStatsReporter) *ResourceCacheCollector {
	return &ResourceCacheCollector{
		c:  c,
		fs: promfamily.New("resource_cache", resourceCacheSpecs, nil, prometheus.Labels{"cache": name}),
	}
}

// Describe implements prometheus.Collector.
func (rc *ResourceCacheCollector) Describe(ch chan<- *prometheus.Desc) {
	promfamily.Describe(rc.fs, ch)
}

// Collect implements prometheus.Collector.
func (rc *ResourceCacheCollector) Collect(ch chan<- prometheus.Metric) {
	promfamily.Collect(rc.fs, rc.c.Stats(), ch)
}
