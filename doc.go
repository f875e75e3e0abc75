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
//     layout) and ocirepo (a registry repository, listed by an index
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
// suite (cache/cachetest, Run): nothing unverified is served, writes are
// atomic, malformed digests are rejected before they touch a path, and
// Stats() counts hits, misses, bytes, evictions and corruptions. The
// suite's optional parts run where a backend has what they check: a byte
// budget that fails with cache.ErrNoSpace and loses nothing (RunNoSpace:
// localfs, memory, a tier; localfs's own tests fill a real tmpfs too),
// leases (RunLeaser), roots (RunRootIndex), deferred syncs
// (RunDeferredSync) and ingestions (RunIngester), each on a store and on
// the tiers and Open results built from it.
//
// # Capabilities and lifecycle
//
// What a store can do beyond cache.LayerCache is an exported interface of
// package cache (Leaser, RootIndex, RootLookup, RootRecorder,
// DeferredSyncer, CounterAdder, Ingester, io.Closer), found with
// cache.As, which looks through wrappers (cache.Unwrapper): a tier
// forwards each to its near tier, so a resolver or mirror over
// tier://near=file://… keeps the leases, the one-lookup roots, the
// one-sync pulls and the write-once cold blobs of the directory.
// What Open returns is a cache.LayerCacheCloser: close it when done.
//
// # Names
//
// Backend packages name their types and constructors one way:
//
//   - A package's main cache type is Cache, made by New, with options of
//     type Option named WithX after what they set (s3.Cache, tier.Cache,
//     ocirepo.Cache, memory.Cache). A type that opens state which outlives the process,
//     rather than making a new cache, is a Store, made by Open
//     (localfs.Store, localfs.Open).
//   - Any further type in the same package is named after the interface
//     of package cache it implements, made by New<Type>, with options of
//     type <Type>Option: memory.LayerCache (NewLayerCache,
//     LayerCacheOption, WithLayerCacheMaxBytes, prefixed because
//     memory.Cache has a WithMaxCost of its own). registry's type is a
//     Resolver (NewResolver, Option), after the cache.BaseImageResolver it
//     implements. Talking to a registry is one regclient.Client (New,
//     Option: WithAuth, WithKeychain, WithRetry, WithTimeouts), given to
//     a resolver, an ocirepo.Cache or both with their WithClient.
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
// # Security
//
// Three adversaries are considered: a hostile registry, a hostile co-user
// of a cache directory, and a hostile cache URL. None of them can make a
// cache serve bytes that do not match their digest: every backend verifies
// what it serves and what it stores. What else each can and cannot do:
//
// A hostile registry (or anyone between it and a plain-HTTP client) can
// refuse service, answer slowly, and say what a tag points to (pin by
// digest not to trust that). It cannot:
//
//   - fill the disk or the heap: every download is bounded by the size in
//     its descriptor, and a negative or absurd size is refused before any
//     request; manifests, indexes and configs, which come without one, are
//     capped: a manifest or index at 4 MiB, a config at 8 MiB, a layer's
//     claimed size at 1 TiB (registry/doc.go, # Bounds). localfs's
//     WithMinFreeBytes holds while a download
//     streams. A download that fails leaves nothing behind.
//   - hang a call: the client's transport has timeouts on connecting, the
//     TLS handshake, the response header and a body that stops moving
//     (30 s, 10 s, 30 s and 30 s by default; regclient.WithTimeouts), and
//     a cached image whose registry has gone silent is served Stale once
//     the retries are spent: at most attempts × bound plus backoff, about
//     two minutes with the defaults. A context's deadline still wins; the
//     CLI's --timeout sets all four bounds at once (0, the default, keeps
//     the library's). Redirects are followed at most 10 times and only to
//     http or https. A body
//     that keeps trickling is bounded by the size caps and the deadline,
//     not by the stall timeout.
//   - get credentials meant for another registry: the host of an oci://
//     URL is the registry, even a single label ("oci://harbor/team/cache"
//     is harbor's, not Docker Hub's), and credentials are sent only after
//     its own 401. Plain HTTP is used only for loopback addresses and
//     hosts named insecure (WithInsecureRegistries, insecure=true), so a
//     password does not cross the network in cleartext otherwise.
//
// A hostile co-user of a localfs directory (anyone who may write to it)
// can delete, truncate or corrupt entries and fill the disk: reads then
// miss or fail with cache.ErrCorrupt, and the bytes are fetched again.
// The directory's permissions are the boundary; share one only with users
// you trust to leave it working. Such a user cannot:
//
//   - make the store read, write, touch or delete anything outside its
//     directory: the store never follows a symbolic link (files are opened
//     with O_NOFOLLOW and checked with Lstat), and an entry that is not a
//     regular file is corrupt: Verify reports it and Put replaces it.
//   - make the store serve what it did not verify.
//
// Among cooperating processes, a lease protects the blobs of a pull in
// progress from every collector (eviction in Put, GC, the CLI's gc), and
// a root is recorded only for a complete image.
//
// A hostile cache URL (from a flag, a config file, an environment
// variable) names what it names: a file:// URL any directory the process
// may write to, an oci:// or s3:// URL any host it can reach, so take a
// cache URL from the same trust as a path. It cannot:
//
//   - carry credentials: userinfo in an oci:// or s3:// URL, or in an S3
//     endpoint (endpoint= in the URL, or the BaseEndpoint of a client
//     given to s3.New), is refused. Credentials come from the Docker
//     keychain and the AWS SDK's chain.
//   - get a secret echoed: errors name URLs and image references with
//     their userinfo masked ("user:xxxxx@host") and without query strings,
//     also when the URL does not parse and when it is nested in a tier://
//     URL; the CLI does the same in its usage errors.
//   - climb out of an S3 prefix: a prefix or blobs or manifests prefix
//     with a "." or ".." segment, a leading "/", a backslash or a control
//     character is refused.
//   - slip in a typo: unknown query parameters are errors.
//
// # Errors
//
// Backends return errors that wrap cache.ErrNotFound, cache.ErrCorrupt,
// cache.ErrDigestMismatch, cache.ErrNoSpace, cache.ErrOffline and
// cache.ErrInvalidDigest; test them with errors.Is.
package buildcache
