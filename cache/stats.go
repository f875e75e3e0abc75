package cache

import "sync/atomic"

// Stats is a snapshot of what a cache has done since it was opened.
type Stats struct {
	Hits        uint64 // lookups answered from the cache
	Misses      uint64 // lookups the cache could not answer
	BytesIn     uint64 // bytes written into the cache
	BytesOut    uint64 // bytes served from the cache
	Evictions   uint64 // entries removed to make room or because they expired
	Corruptions uint64 // entries found not to match their digest, and removed
	Errors      uint64 // operations that failed for another reason (I/O, remote)
}

// HitRatio is Hits / (Hits + Misses), or 0 when there were no lookups.
func (s Stats) HitRatio() float64 {
	total := s.Hits + s.Misses
	if total == 0 {
		return 0
	}
	return float64(s.Hits) / float64(total)
}

// Add returns the sum of two snapshots, for reporting several caches as one.
func (s Stats) Add(o Stats) Stats {
	return Stats{
		Hits:        s.Hits + o.Hits,
		Misses:      s.Misses + o.Misses,
		BytesIn:     s.BytesIn + o.BytesIn,
		BytesOut:    s.BytesOut + o.BytesOut,
		Evictions:   s.Evictions + o.Evictions,
		Corruptions: s.Corruptions + o.Corruptions,
		Errors:      s.Errors + o.Errors,
	}
}

// Counters are the live, lock-free counters behind a Stats snapshot, for
// backends to embed. The zero value is ready to use.
type Counters struct {
	Hits        atomic.Uint64
	Misses      atomic.Uint64
	BytesIn     atomic.Uint64
	BytesOut    atomic.Uint64
	Evictions   atomic.Uint64
	Corruptions atomic.Uint64
	Errors      atomic.Uint64
}

// Snapshot reads the counters. A nil *Counters reads as zero.
func (c *Counters) Snapshot() Stats {
	if c == nil {
		return Stats{}
	}
	return Stats{
		Hits:        c.Hits.Load(),
		Misses:      c.Misses.Load(),
		BytesIn:     c.BytesIn.Load(),
		BytesOut:    c.BytesOut.Load(),
		Evictions:   c.Evictions.Load(),
		Corruptions: c.Corruptions.Load(),
		Errors:      c.Errors.Load(),
	}
}

// TierStats describes a tiered cache (tier.Cache's StatsByTier): its own
// counters as one cache, how its reads were served, and each tier's
// counters (zero for a tier that reports none).
type TierStats struct {
	Stats             // the tiered cache's own counters, as one cache
	NearHits   uint64 // Gets served by the near tier
	FarHits    uint64 // Gets served by the far tier
	Fills      uint64 // far blobs copied into the near tier
	FarErrors  uint64 // far tier failures absorbed (the near tier went on)
	FarSkipped uint64 // far reads and writes not made: the far tier was known down
	Near, Far  Stats
}

// ResourceStats is a snapshot of what a ResourceCache (memory.Cache) has
// done since it was created.
type ResourceStats struct {
	Hits          uint64 // Gets answered with a cached value
	NegativeHits  uint64 // Gets answered with a cached (negative) error
	Misses        uint64 // Gets that found no fresh entry, including those that joined a load
	Loads         uint64 // load functions called, by Get and Refresh
	LoadErrors    uint64 // loads that returned an error (negative ones included) or panicked
	Coalesced     uint64 // Gets that waited for a load another caller started
	Evictions     uint64 // entries evicted for room or expiry, or refused admission
	Invalidations uint64 // calls of Invalidate
}

// HitRatio is (Hits + NegativeHits) / (Hits + NegativeHits + Misses), or 0
// when there were no Gets.
func (s ResourceStats) HitRatio() float64 {
	hits := s.Hits + s.NegativeHits
	if hits+s.Misses == 0 {
		return 0
	}
	return float64(hits) / float64(hits+s.Misses)
}
