package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/promfamily"
)

// MirrorStatsReporter is what NewMirrorCollector reads: a *mirror.Mirror.
type MirrorStatsReporter interface {
	Stats() cache.MirrorStats
}

// MirrorCollector exports a registry mirror's own counters as the
// buildcache_mirror_* families: its failed responses by reason, the blob
// downloads that did not match their digest, and its upstream downloads
// in progress and waiting. The resolver and the store behind it have
// collectors of their own. Create it with NewMirrorCollector.
type MirrorCollector struct {
	m                          MirrorStatsReporter
	failed, mismatches         *prometheus.Desc
	upstreamFetches, upWaiting *prometheus.Desc
}

var _ prometheus.Collector = (*MirrorCollector)(nil)

// NewMirrorCollector returns a collector of m's Stats. Each scrape calls
// m.Stats() once.
func NewMirrorCollector(m MirrorStatsReporter) *MirrorCollector {
	name := func(n string) string { return prometheus.BuildFQName(promfamily.Namespace, "mirror", n) }
	return &MirrorCollector{
		m: m,
		failed: prometheus.NewDesc(name("failed_responses_total"),
			`Responses that failed or were cut short, by reason: "not_found", "denied", "upstream" (unreachable, failing, broke off), "digest_mismatch", "no_space", "closed", "client_gone", "stalled" (the client stopped reading), "corrupt", "internal", "aborted".`,
			[]string{"reason"}, nil),
		mismatches: prometheus.NewDesc(name("digest_mismatches_total"),
			"Blob downloads from upstreams whose bytes did not match their digest or size.", nil, nil),
		upstreamFetches: prometheus.NewDesc(name("upstream_fetches"),
			"Blob downloads from upstreams in progress.", nil, nil),
		upWaiting: prometheus.NewDesc(name("upstream_fetches_waiting"),
			"Blob downloads waiting for one in progress to end (the mirror's bound on upstream downloads).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (mc *MirrorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- mc.failed
	ch <- mc.mismatches
	ch <- mc.upstreamFetches
	ch <- mc.upWaiting
}

// Collect implements prometheus.Collector.
func (mc *MirrorCollector) Collect(ch chan<- prometheus.Metric) {
	s := mc.m.Stats()
	reasons := make([]string, 0, len(s.FailedResponses))
	for r := range s.FailedResponses {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		ch <- prometheus.MustNewConstMetric(mc.failed, prometheus.CounterValue, float64(s.FailedResponses[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(mc.mismatches, prometheus.CounterValue, float64(s.DigestMismatches))
	ch <- prometheus.MustNewConstMetric(mc.upstreamFetches, prometheus.GaugeValue, float64(s.UpstreamFetches))
	ch <- prometheus.MustNewConstMetric(mc.upWaiting, prometheus.GaugeValue, float64(s.UpstreamFetchesWaiting))
}
