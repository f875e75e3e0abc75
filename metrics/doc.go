// Package metrics exports what buildcache's caches count to Prometheus,
// through github.com/prometheus/client_golang.
//
// Each constructor returns a prometheus.Collector over one value's Stats;
// nothing is registered globally, the caller registers the collectors on
// a registry of its own:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(
//		metrics.NewResolverCollector(resolver),
//		metrics.NewLayerCacheCollector("localfs", store),
//	)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// A scrape calls each value's Stats once and reads atomic counters: no
// goroutine, no lock held across the scrape, no walk of a directory or a
// bucket. Every series is a counter since the value was created (a
// process restart starts it again from zero, as Prometheus's rate()
// expects), except the gauges buildcache_k8sclient_watching and
// buildcache_mirror_upstream_fetches(_waiting).
//
// # Collectors
//
//   - NewResolverCollector(r): a registry.Resolver.
//   - NewMirrorCollector(m): a mirror.Mirror's own counters.
//   - NewLayerCacheCollector(name, c): any cache.StatsReporter —
//     localfs.Store, memory.LayerCache, s3.Cache, ocirepo.Cache,
//     tier.Cache as one cache.
//   - NewTierCollector(name, t): a tier.Cache with its per-tier series;
//     register it instead of a LayerCacheCollector for the same cache.
//   - NewResourceCacheCollector(name, c): a memory.Cache[K, V] (the
//     ResourceCache).
//   - k8smetrics.NewClientCollector(name, c): a k8sclient.Client, per
//     resource type, and k8smetrics.NewTypedCollector(name, gvr, t): a
//     k8sclient.Typed, which counts the one resource type gvr. They live in
//     the subpackage k8smetrics so that this package does not link
//     client-go.
//
// Each collector reads a small interface over a stats value type of
// package cache (cache.ResolverStats, cache.Stats, cache.TierStats,
// cache.ResourceStats, cache.MirrorStats), which the backends return: this package links
// cache and Prometheus, none of the backends it exports (no registry,
// tier, memory, AWS SDK, Kubernetes or BuildKit; depcheck_test.go keeps it
// so), and a program registers only the collectors of what it uses.
//
// The name is the value of the collector's cache (or client) label. Two
// collectors of the same kind on one registry need different names:
// registering the second one with the same name fails with a
// prometheus.AlreadyRegisteredError.
//
// # Metric families
//
// Resolver (no labels but source):
//
//	buildcache_resolver_resolves_total              Resolve calls that returned an image
//	buildcache_resolver_resolutions_total{source}   resolutions by source: hit, revalidated, pulled, stale, reserved
//	buildcache_resolver_fetched_blobs_total         blobs and manifests downloaded
//	buildcache_resolver_fetched_bytes_total         bytes downloaded
//	buildcache_resolver_stale_budget_spent_total    stale answers: the registry took longer than the stale budget
//	buildcache_resolver_stale_known_down_total      stale answers without asking a registry known to be failing
//	buildcache_resolver_not_found_remembered_total  a remembered 404 answered without asking again
//	buildcache_resolver_verified_total              images a trust policy's verification admitted
//	buildcache_resolver_untrusted_total{reason,action}  images that failed it: unsigned, wrong_key, bad_signature,
//	                                                identity_mismatch, unavailable; refused or warned
//	buildcache_resolver_rate_limit_requests{registry}            gauge: the registry's RateLimit-Limit
//	buildcache_resolver_rate_limit_remaining_requests{registry}  gauge: its RateLimit-Remaining
//	buildcache_resolver_rate_limit_window_seconds{registry}      gauge: its window (;w=)
//
// Concurrent Resolve calls for the same reference share one resolution:
// each counts in resolves_total, their resolution once in
// resolutions_total.
//
// Registry mirror (no labels but reason):
//
//	buildcache_mirror_failed_responses_total{reason}  responses failed or cut short, by reason
//	buildcache_mirror_digest_mismatches_total         upstream blobs whose bytes did not match
//	buildcache_mirror_upstream_fetches                gauge: blob downloads in progress
//	buildcache_mirror_upstream_fetches_waiting        gauge: blob downloads waiting for a slot
//
// Layer caches and tiered caches as a whole (label cache):
//
//	buildcache_layer_cache_hits_total          lookups answered
//	buildcache_layer_cache_misses_total        lookups not answered
//	buildcache_layer_cache_written_bytes_total bytes written into the cache
//	buildcache_layer_cache_served_bytes_total  bytes served from the cache
//	buildcache_layer_cache_evictions_total     entries removed for room or expiry
//	buildcache_layer_cache_corruptions_total   entries found corrupt and removed
//	buildcache_layer_cache_errors_total        other failures (I/O, remote)
//
// Tiered caches (labels cache, and tier="near" or "far" where shown):
//
//	buildcache_tier_gets_served_total{tier}   Gets served by each tier
//	buildcache_tier_fills_total               far blobs copied into the near tier
//	buildcache_tier_far_errors_total          far tier failures absorbed
//	buildcache_tier_far_skipped_total         far calls not made: far tier known down
//	buildcache_tier_hits_total{tier}          each tier's own counters, with the
//	buildcache_tier_misses_total{tier}        meaning of the layer_cache family
//	buildcache_tier_written_bytes_total{tier} of the same name (zero for a tier
//	buildcache_tier_served_bytes_total{tier}  whose backend counts nothing)
//	buildcache_tier_evictions_total{tier}
//	buildcache_tier_corruptions_total{tier}
//	buildcache_tier_errors_total{tier}
//
// A tier's own counters are its backend's: they include the tiered
// cache's copying (the near tier serves each blob put once more to copy
// it to the far tier), and a far backend shared by several tier.Caches
// reports all of their traffic under each.
//
// Resource caches (label cache):
//
//	buildcache_resource_cache_hits_total          Gets answered with a cached value
//	buildcache_resource_cache_negative_hits_total Gets answered with a cached error
//	buildcache_resource_cache_misses_total        Gets with no fresh entry
//	buildcache_resource_cache_loads_total         load functions called
//	buildcache_resource_cache_load_errors_total   loads that failed or panicked
//	buildcache_resource_cache_coalesced_total     Gets that waited for another's load
//	buildcache_resource_cache_evictions_total     entries evicted, expired or refused
//	buildcache_resource_cache_invalidations_total calls of Invalidate
//
// Kubernetes clients (labels client, and resource="group/version/resource"
// as ResourceLabel writes it: "batch/v1/jobs", "v1/pods"):
//
//	buildcache_k8sclient_hits_total            reads answered with an object or List
//	buildcache_k8sclient_negative_hits_total   reads answered with a remembered 404
//	buildcache_k8sclient_misses_total          reads that found nothing fresh
//	buildcache_k8sclient_coalesced_total       misses that joined another's request
//	buildcache_k8sclient_requests_total        GETs and LISTs sent for reads
//	buildcache_k8sclient_fresh_reads_total     reads made with Fresh
//	buildcache_k8sclient_uncached_lists_total  Lists whose options cannot be cached
//	buildcache_k8sclient_request_errors_total  read requests that failed, 404s included
//	buildcache_k8sclient_evictions_total       entries evicted or expired
//	buildcache_k8sclient_invalidations_total   objects and caches dropped
//	buildcache_k8sclient_writes_total          writes passed through
//	buildcache_k8sclient_watching              gauge: 1 while a watch is open
//	buildcache_k8sclient_watch_events_total    changes seen by the watch
//	buildcache_k8sclient_watch_restarts_total  times the watch was restarted
//
// The requests a cache saved are hits + negative hits + coalesced, for
// example
//
//	sum by (resource) (rate(buildcache_k8sclient_hits_total[5m])
//	  + rate(buildcache_k8sclient_negative_hits_total[5m])
//	  + rate(buildcache_k8sclient_coalesced_total[5m]))
//
// and a layer cache's hit ratio is
//
//	rate(buildcache_layer_cache_hits_total[5m])
//	  / (rate(buildcache_layer_cache_hits_total[5m]) + rate(buildcache_layer_cache_misses_total[5m]))
package metrics
