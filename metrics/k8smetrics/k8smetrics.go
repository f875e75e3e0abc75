// Package k8smetrics exports the per-resource-type counters of a
// k8sclient.Client or k8sclient.Typed as Prometheus metrics, the
// buildcache_k8sclient_* families (see package metrics for the rest). It
// is its own package so that programs exporting only layer cache and
// resolver metrics do not link client-go.
package k8smetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/internal/promfamily"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/buildcache/buildcache/k8sclient"
)

// StatsReporter is what NewClientCollector reads: a
// *k8sclient.Client, whose Stats has one entry per resource type read so
// far.
type StatsReporter interface {
	Stats() map[schema.GroupVersionResource]k8sclient.ResourceStats
}

// TypedStatsReporter is what NewTypedCollector reads: a
// *k8sclient.Typed[T, L] of any T and L.
type TypedStatsReporter interface {
	Stats() k8sclient.ResourceStats
}

// RequestsAvoided is left out: it is the sum of hits, negative hits and
// coalesced misses, which a query can add.
var specs = []promfamily.Spec[k8sclient.ResourceStats]{
	promfamily.Counter("hits_total", "Reads answered from memory with an object or a List.", func(s k8sclient.ResourceStats) uint64 { return s.Hits }),
	promfamily.Counter("negative_hits_total", "Reads answered from memory with a remembered 404.", func(s k8sclient.ResourceStats) uint64 { return s.NegativeHits }),
	promfamily.Counter("misses_total", "Reads (without Fresh) that found nothing fresh, including those that waited for another caller's request.", func(s k8sclient.ResourceStats) uint64 { return s.Misses }),
	promfamily.Counter("coalesced_total", "Misses that waited for a request another caller had started instead of sending one.", func(s k8sclient.ResourceStats) uint64 { return s.Coalesced }),
	promfamily.Counter("requests_total", "GETs and LISTs sent to the API server for reads, whatever their outcome.", func(s k8sclient.ResourceStats) uint64 { return s.Requests }),
	promfamily.Counter("fresh_reads_total", "Reads made with Fresh, each a request.", func(s k8sclient.ResourceStats) uint64 { return s.Fresh }),
	promfamily.Counter("uncached_lists_total", "Lists sent as they were because their options cannot be cached.", func(s k8sclient.ResourceStats) uint64 { return s.Uncached }),
	promfamily.Counter("request_errors_total", "Requests for reads that failed, 404s included.", func(s k8sclient.ResourceStats) uint64 { return s.Errors }),
	promfamily.Counter("evictions_total", "Entries evicted or refused to keep within the cost bound, or expired.", func(s k8sclient.ResourceStats) uint64 { return s.Evictions }),
	promfamily.Counter("invalidations_total", "Objects (with their Lists) dropped by writes, watch events and Invalidate, and whole caches emptied.", func(s k8sclient.ResourceStats) uint64 { return s.Invalidations }),
	promfamily.Counter("writes_total", "Create, Update, Patch and Delete calls passed through.", func(s k8sclient.ResourceStats) uint64 { return s.Writes }),
	{Name: "watching", Help: "1 while a watch of the resource type is open, else 0.", Type: prometheus.GaugeValue,
		Value: func(s k8sclient.ResourceStats) float64 {
			if s.Watching {
				return 1
			}
			return 0
		}},
	promfamily.Counter("watch_events_total", "Changes seen by the watch.", func(s k8sclient.ResourceStats) uint64 { return s.WatchEvents }),
	promfamily.Counter("watch_restarts_total", "Times the watch ended and was started again.", func(s k8sclient.ResourceStats) uint64 { return s.WatchRestarts }),
}

// ResourceLabel is the value of the resource label for gvr:
// "batch/v1/jobs", or "v1/pods" in the core group, as in apiVersion.
func ResourceLabel(gvr schema.GroupVersionResource) string {
	return gvr.GroupVersion().String() + "/" + gvr.Resource
}

// ClientCollector exports the per-resource-type counters of a
// k8sclient.Client, or of one k8sclient.Typed, as the
// buildcache_k8sclient_* families, labelled client=<name> and
// resource="group/version/resource". Create it with NewClientCollector
// or NewTypedCollector.
type ClientCollector struct {
	stats func(yield func(resource string, s k8sclient.ResourceStats))
	fs    []promfamily.Family[k8sclient.ResourceStats]
}

var _ prometheus.Collector = (*ClientCollector)(nil)

func newCollector(name string, stats func(yield func(string, k8sclient.ResourceStats))) *ClientCollector {
	return &ClientCollector{
		stats: stats,
		fs:    promfamily.New("k8sclient", specs, []string{"resource"}, prometheus.Labels{"client": name}),
	}
}

// NewClientCollector returns a collector of c's Stats: one series per
// family and resource type the client has read so far (a type appears on
// its first read). name is the value of the client label, different for
// each collector registered on one registry. Each scrape calls c.Stats()
// once.
func NewClientCollector(name string, c StatsReporter) *ClientCollector {
	return newCollector(name, func(yield func(string, k8sclient.ResourceStats)) {
		for gvr, s := range c.Stats() {
			yield(ResourceLabel(gvr), s)
		}
	})
}

// NewTypedCollector returns a collector of t's Stats, which counts the
// one resource type gvr (a Typed does not know it: pass the type its
// client reads, such as batchv1.SchemeGroupVersion.WithResource("jobs")).
// Its name must differ from that of every other k8sclient collector on
// the registry.
func NewTypedCollector(name string, gvr schema.GroupVersionResource, t TypedStatsReporter) *ClientCollector {
	resource := ResourceLabel(gvr)
	return newCollector(name, func(yield func(string, k8sclient.ResourceStats)) {
		yield(resource, t.Stats())
	})
}

// Describe implements prometheus.Collector.
func (kc *ClientCollector) Describe(ch chan<- *prometheus.Desc) { promfamily.Describe(kc.fs, ch) }

// Collect implements prometheus.Collector.
func (kc *ClientCollector) Collect(ch chan<- prometheus.Metric) {
	kc.stats(func(resource string, s k8sclient.ResourceStats) { promfamily.Collect(kc.fs, s, ch, resource) })
}
