package memory

import (
	"math/rand/v2"
	"sync/atomic"

	"github.com/buildcache/buildcache/cache"
)

// Stats reports what the cache has done since New.
func (c *Cache[K, V]) Stats() cache.ResourceStats {
	s := &c.stats
	var hits uint64
	for i := range s.hits {
		hits += s.hits[i].n.Load()
	}
	return cache.ResourceStats{
		Hits:          hits,
		NegativeHits:  s.negativeHits.Load(),
		Misses:        s.misses.Load(),
		Loads:         s.loads.Load(),
		LoadErrors:    s.loadErrors.Load(),
		Coalesced:     s.coalesced.Load(),
		Evictions:     s.evictions.Load(),
		Invalidations: s.invalidations.Load(),
	}
}

// counters are the live counters behind cache.ResourceStats. Hits, the only
// counter on the fast path, are counted in stripes, each on a cache line
// of its own, so that hits on different cores do not contend for one
// counter (nor with the fields every hit reads). A hit picks its stripe
// at random (math/rand/v2's per-thread generator, a few ns): two cores
// share a stripe one time in hitStripes, and no count is lost, as counts
// live in the stripes. It costs a third of the sync.Pool of per-P tokens
// it replaced, which took a tenth of a hit.
type counters struct {
	_             [64]byte
	hits          [hitStripes]stripe
	_             [64]byte
	negativeHits  atomic.Uint64
	misses        atomic.Uint64
	loads         atomic.Uint64
	loadErrors    atomic.Uint64
	coalesced     atomic.Uint64
	evictions     atomic.Uint64
	invalidations atomic.Uint64
}

const hitStripes = 8 // a power of two

// hit counts a hit in a stripe picked at random.
func (s *counters) hit() { s.hitIn(rand.Uint32()) }

// hitIn counts a hit in stripe r (modulo hitStripes), for callers that
// have drawn a random number already.
func (s *counters) hitIn(r uint32) { s.hits[r%hitStripes].n.Add(1) }

type stripe struct {
	n atomic.Uint64
	_ [56]byte
}
