package cache

import (
	"context"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A LayerCache may do more than the five methods of the interface: keep
// blobs safe from its collectors for a pull in progress (Leaser), keep
// named roots (RootIndex, RootLookup, RootRecorder), sync a group of new
// blobs at once (DeferredSyncer), keep counters across processes
// (CounterAdder), take a blob in while it is read back (Ingester), tell
// whether it can take a write now (WriteProber), hold resources until
// closed (io.Closer). Callers find these capabilities with As, which
// looks through wrappers: a tier, or any store that wraps another and
// says so with Unwrap. A wrapper either implements a capability itself,
// so that it keeps its guarantee for the whole composition (a tier's
// PutDeferred writes the far tier too), or lets As reach the wrapped
// store's through Unwrap, or says in its doc why it offers neither.

// Unwrapper is implemented by a LayerCache that wraps another: a tier
// (its near tier), an instrumenting or read-only wrapper. As looks
// through it for capabilities the wrapper does not implement itself.
type Unwrapper interface {
	Unwrap() LayerCache
}

// maxUnwrap bounds As against a wrapper that (wrongly) wraps itself.
const maxUnwrap = 16

// As finds in c, or in what c wraps (Unwrapper, repeatedly), the first
// store that implements T, and returns it as a T. It is how every caller
// looks for a capability (T = Leaser, RootLookup, DeferredSyncer, ...) or
// for a concrete backend (T = *localfs.Store), so that wrappers never hide
// what is under them.
func As[T any](c LayerCache) (T, bool) {
	for range maxUnwrap {
		if c == nil {
			break
		}
		if t, ok := c.(T); ok {
			return t, true
		}
		u, ok := c.(Unwrapper)
		if !ok {
			break
		}
		c = u.Unwrap()
	}
	var zero T
	return zero, false
}

// DeferredSyncer is implemented by a store that can make a group of new
// blobs durable with one sync instead of one each (localfs: one directory
// fsync per Put otherwise). A blob stored with PutDeferred may be lost in
// a crash until SyncBlobs returns; a pull calls SyncBlobs once, before it
// records the root that references what it stored.
type DeferredSyncer interface {
	// PutDeferred is Put, with the durability of the blob's name left to
	// SyncBlobs.
	PutDeferred(ctx context.Context, d v1.Hash, size int64, r io.Reader) error
	// SyncBlobs makes every blob stored so far durable, including those
	// of other callers' PutDeferred.
	SyncBlobs(ctx context.Context) error
}

// CounterAdder is implemented by a store that keeps named counters across
// processes and restarts (localfs keeps them in its directory), so that
// what a resolver counts adds up over every process that used the store.
type CounterAdder interface {
	// AddCounters adds n to each named counter. Names are short, lower
	// case and dotted ("resolver.pulled"); the store documents the rest.
	AddCounters(counters map[string]uint64) error
}

// Tiered is implemented by a store made of a near tier in front of a far,
// shared one (tier.Cache), for the callers that must see both rather than
// what As finds: BuildKit's cache entries (one per tier), a collector of
// the shared tier, per-tier metrics.
type Tiered interface {
	Near() LayerCache
	Far() LayerCache
}

// LayerCacheCloser is a LayerCache that holds resources (files, background
// goroutines, connections, buffered counters) until Close. Every backend
// of this module is one, and buildcache.Open returns one: close it when
// done, or what it buffered (localfs's lifetime counters, a tier's
// background far writes) may be lost.
type LayerCacheCloser interface {
	LayerCache
	io.Closer
}
