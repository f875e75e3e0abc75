package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/metrics"
)

type mirrorStats cache.MirrorStats

func (m mirrorStats) Stats() cache.MirrorStats { return cache.MirrorStats(m) }

func TestMirrorCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewMirrorCollector(mirrorStats{
		FailedResponses:        map[string]uint64{"no_space": 2, "digest_mismatch": 3},
		DigestMismatches:       1,
		UpstreamFetches:        4,
		UpstreamFetchesWaiting: 5,
	}))
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"buildcache_mirror_failed_responses_total", map[string]string{"reason": "no_space"}, 2},
		{"buildcache_mirror_failed_responses_total", map[string]string{"reason": "digest_mismatch"}, 3},
		{"buildcache_mirror_digest_mismatches_total", nil, 1},
		{"buildcache_mirror_upstream_fetches", nil, 4},
		{"buildcache_mirror_upstream_fetches_waiting", nil, 5},
	} {
		if got := gatherValue(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
