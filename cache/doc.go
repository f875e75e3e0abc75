// Package cache defines the contract of buildcache: the small interfaces
// every backend implements, the values they exchange, and the errors they
// return.
//
// It holds only interfaces, value types, options and errors, and imports
// nothing heavy: backends live in sibling packages (localfs, memory,
// registry, s3), and cache/cachetest is the conformance suite they all run.
//
// # Interfaces
//
//   - [LayerCache]: content-addressed blobs (layers, configs, manifests,
//     BuildKit cache blobs) keyed by digest. Every backend verifies what it
//     writes and what it serves.
//   - [BaseImageResolver]: base image references resolved to per-platform
//     manifest digests, revalidated against the registry with one HEAD.
//   - [ResourceCache]: a read-through cache with TTL for small,
//     slowly-changing values such as Kubernetes objects.
//
// # Errors
//
// Backends wrap the sentinel errors of this package with the digest or key
// they concern, so callers test them with errors.Is:
//
//	if errors.Is(err, cache.ErrNotFound) { ... }
//
// [ErrInvalidDigest] is returned before a malformed digest reaches a path or
// an object key; sha256 is the only algorithm accepted, on purpose: it is
// the one OCI registries and BuildKit use, and one algorithm means one file
// name per blob.
package cache
