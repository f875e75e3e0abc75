package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/promfamily"
)

// layerCacheSpecs are the families of a cache.Stats snapshot, shared by
// the layer cache collector (subsystem layer_cache) and the per-tier
// series of the tier collector (subsystem tier).
var layerCacheSpecs = []promfamily.Spec[cache.Stats]{
	promfamily.Counter("hits_total", "Lookups the cache answered.", func(s cache.Stats) uint64 { return s.Hits }),
	promfamily.Counter("misses_total", "Lookups the cache could not answer.", func(s cache.Stats) uint64 { return s.Misses }),
	promfamily.Counter("written_bytes_total", "Bytes written into the cache.", func(s cache.Stats) uint64 { return s.BytesIn }),
	promfamily.Counter("served_bytes_total", "Bytes served from the cache.", func(s cache.Stats) uint64 { return s.BytesOut }),
	promfamily.Counter("evictions_total", "Entries removed to make room or because they expired.", func(s cache.Stats) uint64 { return s.Evictions }),
	promfamily.Counter("corruptions_total", "Entries found not to match their digest or size, and removed.", func(s cache.Stats) uint64 { return s.Corruptions }),
	promfamily.Counter("errors_total", "Operations that failed for another reason than a miss (I/O, remote).", func(s cache.Stats) uint64 { return s.Errors }),
}

// LayerCacheCollector exports the counters of one cache.LayerCache (any
// cache.StatsReporter) as the buildcache_layer_cache_* families, labelled
// cache=<name>. Create it with NewLayerCacheCollector.
type LayerCacheCollector struct {
	c  cache.StatsReporter
	fs []promfamily.Family[cache.Stats]
}

var _ prometheus.Collector = (*LayerCacheCollector)(nil)

// NewLayerCacheCollector returns a collector of c's Stats: localfs.Store,
// memory.LayerCache, s3.Cache, ocirepo.Cache, tier.Cache (as one
// cache; NewTierCollector adds the per-tier series) or any other
// cache.StatsReporter. name is the value of the cache label, which tells
// the caches of a process apart ("localfs", "near", "shared-bucket"); two
// collectors registered on one registry need different names. Each scrape
// calls c.Stats() once.
func NewLayerCacheCollector(name string, c cache.StatsReporter) *LayerCacheCollector {
	return &LayerCacheCollector{
		c:  c,
		fs: promfamily.New("layer_cache", layerCacheSpecs, nil, prometheus.Labels{"cache": name}),
	}
}

// Describe implements prometheus.Collector.
func (lc *LayerCacheCollector) Describe(ch chan<- *prometheus.Desc) { promfamily.Describe(lc.fs, ch) }

// Collect implements prometheus.Collector.
func (lc *LayerCacheCollector) Collect(ch chan<- prometheus.Metric) {
	promfamily.Collect(lc.fs, lc.c.Stats(), ch)
}
