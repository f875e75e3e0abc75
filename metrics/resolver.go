package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/internal/promfamily"
	"github.com/buildcache/buildcache/registry"
)

// ResolverStatsReporter is what NewResolverCollector reads: a
// *registry.Resolver.
type ResolverStatsReporter interface {
	Stats() registry.ResolverStats
}

var resolverSpecs = []promfamily.Spec[registry.ResolverStats]{
	promfamily.Counter("resolves_total", "Resolve calls that returned an image; concurrent calls that shared one resolution count each.",
		func(s registry.ResolverStats) uint64 { return s.Resolves }),
	promfamily.Counter("fetched_blobs_total", "Blobs, manifests included, downloaded from registries.",
		func(s registry.ResolverStats) uint64 { return s.BlobsFetched }),
	promfamily.Counter("fetched_bytes_total", "Bytes of blobs and manifests downloaded from registries.",
		func(s registry.ResolverStats) uint64 { return s.BytesFetched }),
}

// ResolverCollector exports the counters of a registry.Resolver as the
// buildcache_resolver_* families. Create it with NewResolverCollector.
type ResolverCollector struct {
	r           ResolverStatsReporter
	fs          []promfamily.Family[registry.ResolverStats]
	resolutions *prometheus.Desc
}

var _ prometheus.Collector = (*ResolverCollector)(nil)

// NewResolverCollector returns a collector of r's Stats. Its series carry
// no label of their own; a process with several resolvers can wrap the
// registerer of each with prometheus.WrapRegistererWith. Each scrape calls
// r.Stats() once.
func NewResolverCollector(r ResolverStatsReporter) *ResolverCollector {
	return &ResolverCollector{
		r:  r,
		fs: promfamily.New("resolver", resolverSpecs, nil, nil),
		resolutions: prometheus.NewDesc(prometheus.BuildFQName(promfamily.Namespace, "resolver", "resolutions_total"),
			`Resolutions by where the image came from: "hit" (no request), "revalidated" (one HEAD confirmed the cached digest), "pulled" (something was downloaded), "stale" (the registry failed and the cached copy was served). Concurrent calls that shared one resolution count once.`,
			[]string{"source"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (rc *ResolverCollector) Describe(ch chan<- *prometheus.Desc) {
	promfamily.Describe(rc.fs, ch)
	ch <- rc.resolutions
}

// Collect implements prometheus.Collector.
func (rc *ResolverCollector) Collect(ch chan<- prometheus.Metric) {
	s := rc.r.Stats()
	promfamily.Collect(rc.fs, s, ch)
	for _, src := range []struct {
		label string
		n     uint64
	}{{"hit", s.Hits}, {"revalidated", s.Revalidated}, {"pulled", s.Pulled}, {"stale", s.Stale}} {
		ch <- prometheus.MustNewConstMetric(rc.resolutions, prometheus.CounterValue, float64(src.n), src.label)
	}
}
