// Package buildcache stops container builds, and the schedulers around
// them, from downloading again what they already have.
//
// It is a library of three small interfaces, defined in package cache, with
// interchangeable backends in sibling packages:
//
//   - cache.LayerCache: content-addressed blobs (layers, configs,
//     manifests, BuildKit cache blobs). Backends: localfs (a directory in
//     OCI image-layout form, shared safely by several processes) and memory
//     (a bounded in-memory tier); package tier stacks a near tier in front
//     of a shared far one.
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
// # Opening a cache by URL
//
// Open (or a URLMux, to add schemes) opens any LayerCache from a URL, so a
// cache location can live in a flag or an environment variable:
//
//	file:///var/cache/buildcache?max_bytes=20GiB&ttl=7d
//	mem://?max_bytes=512MiB
//	tier://?near=file%3A%2F%2F%2Fvar%2Fcache%2Fbc&far=mem%3A%2F%2F
//
// Unknown query parameters are errors, never ignored.
//
// # Errors
//
// Backends return errors that wrap cache.ErrNotFound, cache.ErrCorrupt,
// cache.ErrDigestMismatch, cache.ErrNoSpace, cache.ErrOffline and
// cache.ErrInvalidDigest; test them with errors.Is.
package buildcache
