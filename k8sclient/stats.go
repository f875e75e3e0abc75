package k8sclient

import "errors"

// ResourceStats is a snapshot of what the cache of one resource type has
// done since New (or NewTyped). Reads are Get, List and Exists calls.
type ResourceStats struct {
	Hits         uint64 // reads answered from memory with an object or a List
	NegativeHits uint64 // reads answered from memory with a remembered 404
	Misses       uint64 // reads (without Fresh) that found nothing fresh, including those that waited for another caller's request
	Coalesced    uint64 // misses that waited for a request another caller had started, instead of sending one

	Requests uint64 // GETs and LISTs sent for reads, whatever their outcome (writes and watches not included)
	Fresh    uint64 // reads made with Fresh, each a request
	Uncached uint64 // Lists sent as they were because their options cannot be cached (Limit, Continue, ResourceVersion…)
	Errors   uint64 // requests for reads that failed, 404s included

	Evictions     uint64 // entries evicted (or refused) to keep within WithMaxCost, or expired
	Invalidations uint64 // objects (with their Lists) dropped by writes, watch events and Invalidate; whole caches emptied
	Writes        uint64 // Create, Update, Patch and Delete calls passed through, from the first read of the type on

	// RequestsAvoided is Hits + NegativeHits + Coalesced: the reads that
	// would each have been a request without the cache.
	RequestsAvoided uint64

	Watching      bool   // a watch of this resource type is open now (WithWatch)
	WatchEvents   uint64 // changes seen by the watch
	WatchRestarts uint64 // times the watch ended and was started again

	// WatchError is why the watch is down: the error that ended it or
	// refused to open it, kept until a watch opens again; nil while
	// Watching and without WithWatch. apierrors.IsForbidden(WatchError)
	// means RBAC does not allow the watch (list and watch across all
	// namespaces): it is retried at the longest backoff only, the TTL
	// alone bounds staleness meanwhile, and the logger is told at level
	// Error on each try.
	WatchError error
}

// HitRatio is (Hits + NegativeHits) / (Hits + NegativeHits + Misses), or 0
// when there were no reads.
func (s ResourceStats) HitRatio() float64 {
	hits := s.Hits + s.NegativeHits
	if hits+s.Misses == 0 {
		return 0
	}
	return float64(hits) / float64(hits+s.Misses)
}

// Add returns the sum of two snapshots (Watching if either is, the
// WatchErrors of both joined), for
// reporting several resource types as one.
func (s ResourceStats) Add(o ResourceStats) ResourceStats {
	return ResourceStats{
		Hits:            s.Hits + o.Hits,
		NegativeHits:    s.NegativeHits + o.NegativeHits,
		Misses:          s.Misses + o.Misses,
		Coalesced:       s.Coalesced + o.Coalesced,
		Requests:        s.Requests + o.Requests,
		Fresh:           s.Fresh + o.Fresh,
		Uncached:        s.Uncached + o.Uncached,
		Errors:          s.Errors + o.Errors,
		Evictions:       s.Evictions + o.Evictions,
		Invalidations:   s.Invalidations + o.Invalidations,
		Writes:          s.Writes + o.Writes,
		RequestsAvoided: s.RequestsAvoided + o.RequestsAvoided,
		Watching:        s.Watching || o.Watching,
		WatchEvents:     s.WatchEvents + o.WatchEvents,
		WatchRestarts:   s.WatchRestarts + o.WatchRestarts,
		WatchError:      errors.Join(s.WatchError, o.WatchError),
	}
}
