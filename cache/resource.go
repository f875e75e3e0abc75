package cache

import "context"

// ResourceCache is a read-through cache for small, slowly-changing values
// (Kubernetes objects, registry answers). Get returns the cached value for
// key if it is younger than its TTL; otherwise it calls load once, however
// many goroutines ask at the same time, and caches what load returns.
// Invalidate drops key, so the next Get loads it again.
type ResourceCache[K comparable, V any] interface {
	Get(ctx context.Context, key K, load func(context.Context) (V, error)) (V, error)
	Invalidate(key K)
}
