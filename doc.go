// Package buildcache stops container builds, and the schedulers around
// them, from downloading again what they already have.
//
// It is a library of three small interfaces, defined in package cache, with
// interchangeable backends in sibling packages:
//
//   - cache.LayerCache: content-addressed blobs (layers, configs,
//     manifests, BuildKit cache blobs). Backends: localfs (a directory in
//     OCI image-layout form, shared safely by several processes) and memory
//     (a bounded in-memory tier).
//   - cache.BaseImageResolver: base images resolved to per-platform
//     digests, kept locally and revalidated with one HEAD.
//   - cache.ResourceCache: a TTL'd, read-through memory cache for small,
//     slowly-changing values such as Kubernetes objects (memory.New).
//
// Every backend keeps the same rules, checked by one conformance suite
// (cache/cachetest): nothing unverified is served, writes are atomic, a full
// disk fails with cache.ErrNoSpace and loses nothing, malformed digests are
// rejected before they touch a path, and Stats() counts hits, misses, bytes,
// evictions and corruptions.
//
// # Errors
//
// Backends return errors that wrap cache.ErrNotFound, cache.ErrCorrupt,
// cache.ErrDigestMismatch, cache.ErrNoSpace, cache.ErrOffline and
// cache.ErrInvalidDigest; test them with errors.Is.
package buildcache
