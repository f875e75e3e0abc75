package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/buildcache/buildcache/k8sclient"
)

// K8sStatsReporter is what NewK8sClientCollector reads: a
// *k8sclient.Client, whose Stats has one entry per resource type read so
// far.
type K8sStatsReporter interface {
	Stats() map[schema.GroupVersionResource]k8sclient.ResourceStats
}

// K8sTypedStatsReporter is what NewK8sTypedCollector reads: a
// *k8sclient.Typed[T, L] of any T and L.
type K8sTypedStatsReporter interface {
	Stats() k8sclient.ResourceStats
}

// RequestsAvoided is left out: it is the sum of hits, negative hits and
// coalesced misses, which a query can add.
var k8sSpecs = []spec[k8sclient.ResourceStats]{
	counter("hits_total", "Reads answered from memory with an object or a List.", func(s k8sclient.ResourceStats) uint64 { return s.Hits }),
	counter("negative_hits_total", "Reads answered from memory with a remembered 404.", func(s k8sclient.ResourceStats) uint64 { return s.NegativeHits }),
	counter("misses_total", "Reads (without Fresh) that found nothing fresh, including those that waited for another caller's request.", func(s k8sclient.ResourceStats) uint64 { return s.Misses }),
	counter("coalesced_total", "Misses that waited for a request another caller had started instead of sending one.", func(s k8sclient.ResourceStats) uint64 { return s.Coalesced }),
	counter("requests_total", "GETs and LISTs sent to the API server for reads, whatever their outcome.", func(s k8sclient.ResourceStats) uint64 { return s.Requests }),
	counter("fresh_reads_total", "Reads made with Fresh, each a request.", func(s k8sclient.ResourceStats) uint64 { return s.Fresh }),
	counter("uncached_lists_total", "Lists sent as they were because their options cannot be cached.", func(s k8sclient.ResourceStats) uint64 { return s.Uncached }),
	counter("request_errors_total", "Requests for reads that failed, 404s included.", func(s k8sclient.ResourceStats) uint64 { return s.Errors }),
	counter("evictions_total", "Entries evicted or refused to keep within the cost bound, or expired.", func(s k8sclient.ResourceStats) uint64 { return s.Evictions }),
	counter("invalidations_total", "Objects (with their Lists) dropped by writes, watch events and Invalidate, and whole caches emptied.", func(s k8sclient.ResourceStats) uint64 { return s.Invalidations }),
	counter("writes_total", "Create, Update, Patch and Delete calls passed through.", func(s k8sclient.ResourceStats) uint64 { return s.Writes }),
	{name: "watching", help: "1 while a watch of the resource type is open, else 0.", typ: prometheus.GaugeValue,
		value: func(s k8sclient.ResourceStats) float64 {
			if s.Watching {
				return 1
			}
			return 0
		}},
	counter("watch_events_total", "Changes seen by the watch.", func(s k8sclient.ResourceStats) uint64 { return s.WatchEvents }),
	counter("watch_restarts_total", "Times the watch ended and was started again.", func(s k8sclient.ResourceStats) uint64 { return s.WatchRestarts }),
}

// ResourceLabel is the value of the resource label for gvr:
// "batch/v1/jobs", or "v1/pods" in the core group, as in apiVersion.
func ResourceLabel(gvr schema.GroupVersionResource) string {
	return gvr.GroupVersion().String() + "/" + gvr.Resource
}

// K8sClientCollector exports the per-resource-type counters of a
// k8sclient.Client, or of one k8sclient.Typed, as the
// buildcache_k8sclient_* families, labelled client=<name> and
// resource="group/version/resource". Create it with NewK8sClientCollector
// or NewK8sTypedCollector.
type K8sClientCollector struct {
	stats func(yield func(resource string, s k8sclient.ResourceStats))
	fs    []family[k8sclient.ResourceStats]
}

var _ prometheus.Collector = (*K8sClientCollector)(nil)

func newK8sCollector(name string, stats func(yield func(string, k8sclient.ResourceStats))) *K8sClientCollector {
	return &K8sClientCollector{
		stats: stats,
		fs:    families("k8sclient", k8sSpecs, []string{"resource"}, prometheus.Labels{"client": name}),
	}
}

// NewK8sClientCollector returns a collector of c's Stats: one series per
// family and resource type the client has read so far (a type appears on
// its first read). name is the value of the client label, different for
// each collector registered on one registry. Each scrape calls c.Stats()
// once.
func NewK8sClientCollector(name string, c K8sStatsReporter) *K8sClientCollector {
	return newK8sCollector(name, func(yield func(string, k8sclient.ResourceStats)) {
		for gvr, s := range c.Stats() {
			yield(ResourceLabel(gvr), s)
		}
	})
}

// NewK8sTypedCollector returns a collector of t's Stats, which counts the
// one resource type gvr (a Typed does not know it: pass the type its
// client reads, such as batchv1.SchemeGroupVersion.WithResource("jobs")).
// Its name must differ from that of every other k8sclient collector on
// the registry.
func NewK8sTypedCollector(name string, gvr schema.GroupVersionResource, t K8sTypedStatsReporter) *K8sClientCollector {
	resource := ResourceLabel(gvr)
	return newK8sCollector(name, func(yield func(string, k8sclient.ResourceStats)) {
		yield(resource, t.Stats())
	})
}

// Describe implements prometheus.Collector.
func (kc *K8sClientCollector) Describe(ch chan<- *prometheus.Desc) { describe(kc.fs, ch) }

// Collect implements prometheus.Collector.
func (kc *K8sClientCollector) Collect(ch chan<- prometheus.Metric) {
	kc.stats(func(resource string, s k8sclient.ResourceStats) { collect(kc.fs, s, ch, resource) })
}
