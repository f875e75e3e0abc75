// Package memory provides the in-memory tier of buildcache: a TTL'd,
// cost-bounded read-through ResourceCache on ristretto for small values
// such as Kubernetes objects, and a bounded LayerCache for blobs.
//
// # ResourceCache
//
// New returns a cache.ResourceCache[K, V]. A Get within an entry's TTL is
// answered from memory; a miss calls the load function once however many
// goroutines miss the same key at the same time, and stores its result.
// Errors the caller marks as negative (for example "not found") can be
// remembered for a shorter TTL. A hit reads a lock-free index of the
// entries, and neither allocates nor takes a lock. The cost bound is kept
// by ristretto, made only once the cache holds 1 MiB and sized from the
// entries it holds (see WithMaxCost); it may refuse a write under
// pressure, which costs a reload, never a stale answer.
//
// # LayerCache
//
// NewLayerCache returns a cache.LayerCache that holds blobs in memory up to
// a byte budget (WithLayerCacheMaxBytes; none by default), evicting the
// least recently used. Bytes are verified
// against their digest when they are put; they cannot change afterwards,
// since no caller ever holds the stored slice, so they are not hashed again
// on every read. It suits tests and a small near tier in front of a slower
// one; blobs bigger than the budget fail with cache.ErrNoSpace before they
// are read.
package memory
