package registry

import (
	"sync"
	"sync/atomic"

	"github.com/buildcache/buildcache/cache"
)

// A Resolver's counters (ResolverStats) are per process. When its store
// keeps named counters across processes (localfs.Store's AddCounters and
// Lifetime do, in the store directory), the resolver adds what it counted
// there after every Resolve, so that the store's lifetime counters include
// its pulls and revalidations; a tier.Cache is seen through to its near
// tier, where the resolver's records are kept too. Adding is cheap (the
// store batches its writes), and ResolverStatsFromCounters reads them
// back. Rate limits are not persisted: they are the registry's, of the
// moment.

// counterStoreOf finds where a resolver over store can persist its
// counters (a tier's near tier, through cache.As), or nil.
func counterStoreOf(store cache.LayerCache) cache.CounterAdder {
	ca, _ := cache.As[cache.CounterAdder](store)
	return ca
}

// persistedCounters is how many of a resolver's counters are persisted.
const persistedCounters = 8

// resolverCounterNames name the persisted counters, in the order of
// resolverCounters.fields and ResolverStats.fields.
var resolverCounterNames = [persistedCounters]string{
	"resolver.resolves", "resolver.hits", "resolver.revalidated", "resolver.pulled",
	"resolver.stale", "resolver.reserved", "resolver.blobs_fetched", "resolver.bytes_fetched",
}

func (c *resolverCounters) fields() []*atomic.Uint64 {
	return []*atomic.Uint64{&c.resolves, &c.hits, &c.revalidated, &c.pulled, &c.stale, &c.reserved, &c.blobs, &c.bytes}
}

func statsFields(s *cache.ResolverStats) []*uint64 {
	return []*uint64{&s.Resolves, &s.Hits, &s.Revalidated, &s.Pulled, &s.Stale, &s.Reserved, &s.BlobsFetched, &s.BytesFetched}
}

// ResolverStatsFromCounters returns the ResolverStats that resolvers
// persisted in a store's named counters (localfs.Lifetime.Counters):
// what every process's resolvers over the store counted. Fields that are
// not persisted (RevalidationsUnrecorded, RateLimits) are zero.
func ResolverStatsFromCounters(counters map[string]uint64) cache.ResolverStats {
	var s cache.ResolverStats
	for i, f := range statsFields(&s) {
		*f = counters[resolverCounterNames[i]]
	}
	return s
}

// durableCounters is what a resolver has added to its store's counters.
type durableCounters struct {
	to cache.CounterAdder // nil: the store keeps none

	mu     sync.Mutex
	pushed [persistedCounters]uint64 // resolverCounters.fields as last added
}

// persistCounters adds to the store's counters what the resolver counted
// since it last did. A failure keeps the delta for the next time.
func (r *Resolver) persistCounters() {
	d := &r.durable
	if d.to == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var now [persistedCounters]uint64
	delta := map[string]uint64{}
	for i, f := range r.stats.fields() {
		now[i] = f.Load()
		if n := now[i] - d.pushed[i]; n != 0 {
			delta[resolverCounterNames[i]] = n
		}
	}
	if len(delta) == 0 {
		return
	}
	if d.to.AddCounters(delta) == nil {
		d.pushed = now
	}
}
