// Package buildcache stops container builds, and the schedulers around
// them, from downloading again what they already have.
//
// It is a library of three small interfaces, defined in package cache, with
// interchangeable backends in sibling packages:
//
//   - cache.LayerCache: content-addressed blobs (layers, configs,
//     manifests, BuildKit cache blobs). Backends: localfs (a directory in
//     OCI image-layout form, shared safely by several processes), memory (a
//     bounded in-memory tier), s3 (an S3 bucket, in BuildKit's s3 cache
//     layout) and registry (a registry repository, listed by an index
//     manifest at a tag); package tier stacks a near tier in front of a
//     shared far one.
//   - cache.BaseImageResolver: base images resolved to per-platform
//     digests, kept in a local store and revalidated with one HEAD
//     (registry.NewResolver).
//   - cache.ResourceCache: a TTL'd, read-through memory cache for small,
//     slowly-changing values (memory.New); package k8sclient puts one in
//     front of client-go for Kubernetes objects.
//
// Package buildkit hands these caches to BuildKit: base images pinned from
// the resolver's store, and cache import/export entries over the very
// directory, bucket or repository the backends use.
//
// Every LayerCache backend keeps the same rules, checked by one conformance
// suite (cache/cachetest): nothing unverified is served, writes are atomic,
// a full disk fails with cache.ErrNoSpace and loses nothing, malformed
// digests are rejected before they touch a path, and Stats() counts hits,
// misses, bytes, evictions and corruptions.
//
// # Names
//
// Backend packages name their types and constructors one way:
//
//   - A package's main cache type is Cache, made by New, with options of
//     type Option named WithX after what they set (s3.Cache, tier.Cache,
//     memory.Cache). A type that opens state which outlives the process,
//     rather than making a new cache, is a Store, made by Open
//     (localfs.Store, localfs.Open).
//   - Any further type in the same package is named after the interface
//     of package cache it implements, made by New<Type>, with options of
//     type <Type>Option: memory.LayerCache (NewLayerCache,
//     LayerCacheOption, WithLayerCacheMaxBytes, prefixed because
//     memory.Cache has a WithMaxCost of its own), registry.LayerCache
//     (NewLayerCache, LayerCacheOption, WithIndexTag). registry's main
//     type is a Resolver (NewResolver, Option), after the
//     cache.BaseImageResolver it implements, since the package has no one
//     Cache; what both of its types do alike (talk to a registry) is one
//     ClientOption accepted by both (WithAuth, WithKeychain, WithRetry).
//   - Options that can be wrong return an error from the constructor, and
//     each says its default.
//
// # Opening a cache by URL
//
// Open (or a URLMux, to add schemes) opens any LayerCache from a URL, so a
// cache location can live in a flag or an environment variable:
//
//	file:///var/cache/buildcache?max_bytes=20GiB&ttl=7d
//	mem://?max_bytes=512MiB
//	s3://bucket/prefix/?region=us-east-1
//	oci://registry.example.com/team/cache
//	tier://?near=file%3A%2F%2F%2Fvar%2Fcache%2Fbc&far=mem%3A%2F%2F
//
// Unknown query parameters are errors, never ignored.
//
// This package imports every backend, so that Open knows every scheme with
// no set-up and a URL in a flag can name any of them. go-cloud's drivers
// register their scheme when the program imports them instead, which keeps
// unused SDKs out of a binary but turns a forgotten blank import into an
// "unknown scheme" at run time. The price of knowing every scheme: a
// program that calls only Open("file://...") is 11.7 MB (8.1 MB stripped,
// 359 packages), one that calls localfs.Open directly 3.7 MB (2.4 MB, 109
// packages), with Go 1.26 on linux/amd64. A program that needs only a
// directory and minds its size imports localfs, not this package.
//
// # Errors
//
// Backends return errors that wrap cache.ErrNotFound, cache.ErrCorrupt,
// cache.ErrDigestMismatch, cache.ErrNoSpace, cache.ErrOffline and
// cache.ErrInvalidDigest; test them with errors.Is.
package buildcache
