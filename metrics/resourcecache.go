package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/memory"
)

// ResourceStatsReporter is what NewResourceCacheCollector reads: a
// *memory.Cache[K, V] of any K and V.
type ResourceStatsReporter interface {
	Stats() memory.ResourceStats
}

var resourceCacheSpecs = []spec[memory.ResourceStats]{
	counter("hits_total", "Gets answered with a cached value.", func(s memory.ResourceStats) uint64 { return s.Hits }),
	counter("negative_hits_total", "Gets answered with a cached (negative) error.", func(s memory.ResourceStats) uint64 { return s.NegativeHits }),
	counter("misses_total", "Gets that found no fresh entry, including those that joined a load.", func(s memory.ResourceStats) uint64 { return s.Misses }),
	counter("loads_total", "Load functions called, by Get and Refresh.", func(s memory.ResourceStats) uint64 { return s.Loads }),
	counter("load_errors_total", "Loads that returned an error (negative ones included) or panicked.", func(s memory.ResourceStats) uint64 { return s.LoadErrors }),
	counter("coalesced_total", "Gets that waited for a load another caller started.", func(s memory.ResourceStats) uint64 { return s.Coalesced }),
	counter("evictions_total", "Entries evicted for room or expiry, or refused admission.", func(s memory.ResourceStats) uint64 { return s.Evictions }),
	counter("invalidations_total", "Calls of Invalidate.", func(s memory.ResourceStats) uint64 { return s.Invalidations }),
}

// ResourceCacheCollector exports the counters of a memory.Cache (the
// ResourceCache) as the buildcache_resource_cache_* families, labelled
// cache=<name>. Create it with NewResourceCacheCollector.
type ResourceCacheCollector struct {
	c  ResourceStatsReporter
	fs []family[memory.ResourceStats]
}

var _ prometheus.Collector = (*ResourceCacheCollector)(nil)

// NewResourceCacheCollector returns a collector of c's Stats; name is the
// value of the cache label ("package-repositories"), different for each
// collector registered on one registry. Each scrape calls c.Stats() once.
func NewResourceCacheCollector(name string, c ResourceStatsReporter) *ResourceCacheCollector {
	return &ResourceCacheCollector{
		c:  c,
		fs: families("resource_cache", resourceCacheSpecs, nil, prometheus.Labels{"cache": name}),
	}
}

// Describe implements prometheus.Collector.
func (rc *ResourceCacheCollector) Describe(ch chan<- *prometheus.Desc) { describe(rc.fs, ch) }

// Collect implements prometheus.Collector.
func (rc *ResourceCacheCollector) Collect(ch chan<- prometheus.Metric) {
	collect(rc.fs, rc.c.Stats(), ch)
}
