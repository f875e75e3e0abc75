package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/promfamily"
)

// TierStatsReporter is what NewTierCollector reads: a *tier.Cache.
type TierStatsReporter interface {
	StatsByTier() cache.TierStats
}

// tierSpecs are the tier's own families beyond those of cache.Stats.
var tierSpecs = []promfamily.Spec[cache.TierStats]{
	promfamily.Counter("fills_total", "Blobs read from the far tier and copied into the near tier.", func(s cache.TierStats) uint64 { return s.Fills }),
	promfamily.Counter("far_errors_total", "Far tier failures the tiered cache absorbed while the near tier went on.", func(s cache.TierStats) uint64 { return s.FarErrors }),
	promfamily.Counter("far_skipped_total", "Far tier reads and writes the tiered cache did not make because the far tier was known down.", func(s cache.TierStats) uint64 { return s.FarSkipped }),
}

// TierCollector exports a tier.Cache: the cache as a whole in the
// buildcache_layer_cache_* families (as NewLayerCacheCollector would),
// the Gets each tier served, the fills and absorbed far errors, and each
// tier's own counters in buildcache_tier_* families labelled
// tier="near" or tier="far". Create it with NewTierCollector.
type TierCollector struct {
	t      TierStatsReporter
	whole  []promfamily.Family[cache.Stats]
	tiers  []promfamily.Family[cache.Stats]
	own    []promfamily.Family[cache.TierStats]
	served *prometheus.Desc
}

var _ prometheus.Collector = (*TierCollector)(nil)

// NewTierCollector returns a collector of t's StatsByTier, labelled
// cache=<name>. Register it instead of, not beside, a LayerCacheCollector
// of the same tier.Cache and name: both export the buildcache_layer_cache_*
// series of the cache as a whole. A tier whose backend counts nothing
// reports zeros; one shared by several tier.Caches reports their sum in
// each. Each scrape calls t.StatsByTier() once.
func NewTierCollector(name string, t TierStatsReporter) *TierCollector {
	labels := prometheus.Labels{"cache": name}
	return &TierCollector{
		t:     t,
		whole: promfamily.New("layer_cache", layerCacheSpecs, nil, labels),
		tiers: promfamily.New("tier", layerCacheSpecs, []string{"tier"}, labels),
		own:   promfamily.New("tier", tierSpecs, nil, labels),
		served: prometheus.NewDesc(prometheus.BuildFQName(promfamily.Namespace, "tier", "gets_served_total"),
			"Gets of the tiered cache served by each tier.", []string{"tier"}, labels),
	}
}

// Describe implements prometheus.Collector.
func (tc *TierCollector) Describe(ch chan<- *prometheus.Desc) {
	promfamily.Describe(tc.whole, ch)
	promfamily.Describe(tc.tiers, ch)
	promfamily.Describe(tc.own, ch)
	ch <- tc.served
}

// Collect implements prometheus.Collector.
func (tc *TierCollector) Collect(ch chan<- prometheus.Metric) {
	s := tc.t.StatsByTier()
	promfamily.Collect(tc.whole, s.Stats, ch)
	promfamily.Collect(tc.tiers, s.Near, ch, "near")
	promfamily.Collect(tc.tiers, s.Far, ch, "far")
	promfamily.Collect(tc.own, s, ch)
	ch <- prometheus.MustNewConstMetric(tc.served, prometheus.CounterValue, float64(s.NearHits), "near")
	ch <- prometheus.MustNewConstMetric(tc.served, prometheus.CounterValue, float64(s.FarHits), "far")
}
