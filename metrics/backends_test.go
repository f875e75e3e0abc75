package metrics_test

import (
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/metrics"
	"github.com/buildcache/buildcache/ocirepo"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// Every backend fits the collector meant for it.
var (
	_ cache.StatsReporter = (*localfs.Store)(nil)
	_ cache.StatsReporter = (*memory.LayerCache)(nil)
	_ cache.StatsReporter = (*s3.Cache)(nil)
	_ cache.StatsReporter = (*ocirepo.Cache)(nil)
	_ cache.StatsReporter = (*tier.Cache)(nil)

	_ metrics.TierStatsReporter     = (*tier.Cache)(nil)
	_ metrics.ResolverStatsReporter = (*registry.Resolver)(nil)
	_ metrics.ResourceStatsReporter = (*memory.Cache[string, int])(nil)
)
