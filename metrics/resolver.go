package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/promfamily"
)

// ResolverStatsReporter is what NewResolverCollector reads: a
// *registry.Resolver.
type ResolverStatsReporter interface {
	Stats() cache.ResolverStats
}

var resolverSpecs = []promfamily.Spec[cache.ResolverStats]{
	promfamily.Counter("resolves_total", "Resolve calls that returned an image; concurrent calls that shared one resolution count each.",
		func(s cache.ResolverStats) uint64 { return s.Resolves }),
	promfamily.Counter("fetched_blobs_total", "Blobs, manifests included, downloaded from registries.",
		func(s cache.ResolverStats) uint64 { return s.BlobsFetched }),
	promfamily.Counter("fetched_bytes_total", "Bytes of blobs and manifests downloaded from registries.",
		func(s cache.ResolverStats) uint64 { return s.BytesFetched }),
	promfamily.Counter("stale_budget_spent_total", `Stale answers given because the registry did not answer, or asked for a wait (Retry-After, backoff), beyond the stale budget (serve --stale-budget); among resolutions_total{source="stale"}.`,
		func(s cache.ResolverStats) uint64 { return s.StaleBudgetSpent }),
	promfamily.Counter("stale_known_down_total", `Stale answers given without asking the registry, known to be failing (its last try timed out, or a 5xx's Retry-After had not passed); among resolutions_total{source="stale"}.`,
		func(s cache.ResolverStats) uint64 { return s.StaleKnownDown }),
	promfamily.Counter("not_found_remembered_total", "Resolves answered with the 404 the registry gave lately for the reference, without asking it again (serve --not-found-ttl).",
		func(s cache.ResolverStats) uint64 { return s.NotFoundRemembered }),
	promfamily.Counter("verified_total", "Images a trust policy's signature verification admitted (--trust-policy).",
		func(s cache.ResolverStats) uint64 { return s.Verified }),
}

// ResolverCollector exports the counters of a registry.Resolver as the
// buildcache_resolver_* families. Create it with NewResolverCollector.
type ResolverCollector struct {
	r           ResolverStatsReporter
	fs          []promfamily.Family[cache.ResolverStats]
	resolutions *prometheus.Desc
	untrusted   *prometheus.Desc // by reason and action
	// Per registry host, from the RateLimit headers of its last answer.
	rateLimit, rateRemaining, rateWindow *prometheus.Desc
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
			`Resolutions by where the image came from: "hit" (no request), "revalidated" (one HEAD confirmed the cached digest), "pulled" (something was downloaded), "stale" (the registry failed and the cached copy was served), "reserved" (the cached copy was served to keep within a rate-limit reserve). Concurrent calls that shared one resolution count once.`,
			[]string{"source"}, nil),
		untrusted: prometheus.NewDesc(prometheus.BuildFQName(promfamily.Namespace, "resolver", "untrusted_total"),
			`Images that failed a trust policy's signature verification, by reason ("unsigned", "wrong_key", "bad_signature", "identity_mismatch", "unavailable") and action ("refused": the policy requires a signature; "warned": admitted all the same).`,
			[]string{"reason", "action"}, nil),
		rateLimit: prometheus.NewDesc(prometheus.BuildFQName(promfamily.Namespace, "resolver", "rate_limit_requests"),
			"Requests the registry allows per window, as its last RateLimit-Limit header said (Docker Hub counts manifest GETs, not HEADs).",
			[]string{"registry"}, nil),
		rateRemaining: prometheus.NewDesc(prometheus.BuildFQName(promfamily.Namespace, "resolver", "rate_limit_remaining_requests"),
			"Requests left in the registry's current window, as its last RateLimit-Remaining header said.",
			[]string{"registry"}, nil),
		rateWindow: prometheus.NewDesc(prometheus.BuildFQName(promfamily.Namespace, "resolver", "rate_limit_window_seconds"),
			"The registry's rate-limit window (the ;w= of its headers); 0 when it states none.",
			[]string{"registry"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (rc *ResolverCollector) Describe(ch chan<- *prometheus.Desc) {
	promfamily.Describe(rc.fs, ch)
	ch <- rc.resolutions
	ch <- rc.untrusted
	ch <- rc.rateLimit
	ch <- rc.rateRemaining
	ch <- rc.rateWindow
}

// Collect implements prometheus.Collector.
func (rc *ResolverCollector) Collect(ch chan<- prometheus.Metric) {
	s := rc.r.Stats()
	promfamily.Collect(rc.fs, s, ch)
	for _, src := range []struct {
		label string
		n     uint64
	}{{"hit", s.Hits}, {"revalidated", s.Revalidated}, {"pulled", s.Pulled}, {"stale", s.Stale}, {"reserved", s.Reserved}} {
		ch <- prometheus.MustNewConstMetric(rc.resolutions, prometheus.CounterValue, float64(src.n), src.label)
	}
	for k, n := range s.Untrusted {
		action := "warned"
		if k.Refused {
			action = "refused"
		}
		ch <- prometheus.MustNewConstMetric(rc.untrusted, prometheus.CounterValue, float64(n), k.Reason, action)
	}
	for host, rl := range s.RateLimits {
		if !rl.Stated {
			continue // only a 429 seen: no numbers to report
		}
		ch <- prometheus.MustNewConstMetric(rc.rateLimit, prometheus.GaugeValue, float64(rl.Limit), host)
		ch <- prometheus.MustNewConstMetric(rc.rateRemaining, prometheus.GaugeValue, float64(rl.Remaining), host)
		ch <- prometheus.MustNewConstMetric(rc.rateWindow, prometheus.GaugeValue, rl.Window.Seconds(), host)
	}
}
