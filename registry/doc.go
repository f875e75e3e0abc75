// Package registry connects buildcache to OCI registries: a
// BaseImageResolver that keeps base images in a local store and
// revalidates them with one HEAD, and a LayerCache whose blobs live in a
// registry repository.
//
// # Resolving base images
//
// NewResolver(store) returns a cache.BaseImageResolver. Resolve turns
// "flink:1.14.5-scala_2.11" into the digest the tag points to and the
// manifest digest of each requested platform, downloading into store only
// the manifests, configs and layers it lacks, verified. The tag's digest is
// recorded as a root of the store's index (index.json for localfs, with the
// annotation org.opencontainers.image.ref.name), so a restart remembers it
// and GC keeps the image until Prune drops it.
//
// The pull policy decides when the network is used:
//
//   - cache.PullAlways (default): one HEAD; the same digest is Revalidated
//     with no GET, a moved tag pulls what changed (Pulled).
//   - cache.PullIfNotPresent: a cached image is a Hit with no request.
//   - cache.PullNever: a cached image or cache.ErrOffline.
//
// cache.WithMaxAge(d) treats a revalidation younger than d as fresh. A
// reference by digest that is cached never touches the network. When the
// registry is unreachable or answers 5xx/429 and the image is cached, it is
// served with Source Stale and the error in RemoteErr (WithStaleIfError
// turns this off). Image(ctx, resolved, platform) serves a resolved image
// from the store with no network.
//
// # Requests
//
// A Resolver and a LayerCache talk to registries the same way, set by the
// same ClientOptions (WithKeychain, WithAuth, WithTransport,
// WithInsecureRegistries, WithRetry, WithTimeouts). Requests go out
// without credentials and authenticate only when the registry answers 401
// (with credentials from the keychain, default authn.DefaultKeychain),
// using the challenge of that 401: anonymous registries cost no /v2/ ping,
// an authenticated revalidation costs the 401 and the HEAD (and a bearer
// token's request), and concurrent requests that meet one challenge share
// one login. Every request carries the User-Agent "buildcache", logins and
// token requests included. 429, 5xx and broken connections are retried
// with backoff, honouring Retry-After. Up to 10 redirects to http or https
// URLs are followed; a longer chain or a redirect elsewhere (file://) is
// the registry's error, with the redirect's status: not an outage, not
// served Stale, not retried.
//
// Plain HTTP is used only for loopback registries ("localhost",
// 127.0.0.0/8, ::1) and those WithInsecureRegistries names; every other
// registry, private addresses such as 10.0.0.0/8 or 192.168.0.0/16
// included, whatever the port, is spoken to over HTTPS, as Docker and
// containerd do. Concurrent identical resolves, and concurrent downloads
// of one blob, share one request. A pull fetches the platforms' manifests
// at once and then the blobs in parallel (WithJobs).
//
// # Timeouts
//
// A registry that stops answering fails a request within bounds
// (WithTimeouts; the defaults in brackets): connecting [30s], the TLS
// handshake [10s], waiting for an answer's headers once the request is
// sent [30s], and each wait for the next bytes of a body that stops
// moving, downloads and uploads alike [30s; time the caller spends
// between Reads does not count]. Such a failure is a *RemoteError that
// is a timeout (net.Error): it is retried like a broken connection
// (WithRetry), so a silent registry costs at most attempts × bound plus
// the backoff before a cached image is served Stale, or, if nothing is
// cached, cache.ErrOffline. The header and stall bounds are kept by the
// client itself, by cancelling the request's context, so they also hold
// for a transport given with WithTransport (which keeps its own dial and
// TLS settings; WithTimeouts' Connect and TLSHandshake conflict with it).
// A context's deadline or cancellation always wins: the call ends with
// the context's error, and nothing is served Stale.
//
// # Bounds
//
// A registry may be hostile or broken, so every download a pull makes is
// bounded before it starts, by the size a descriptor states where there is
// one and by a cap where there is none:
//
//   - A manifest or index: 4 MiB (cache.MaxManifestBytes; as registries and
//     containerd cap them). One an index lists is read no further than the
//     size the index states, which must be 1 byte to 4 MiB.
//   - An image config: the size its manifest states, at most 8 MiB
//     (maxConfigBytes; configs are a few KiB).
//   - A layer: the size its manifest states, at most 1 TiB (maxBlobBytes;
//     the largest layers in use are tens of GiB).
//
// A negative size, or one above its cap, is an error naming the digest
// and the size, before any request for that blob. A body longer than its
// stated size is cut one byte past it: the store's Put fails with an
// error naming the digest and the size, wrapping cache.ErrDigestMismatch,
// stores nothing, and the connection is closed. The manifest an index
// lists for a platform must be an image manifest (a nested index there is
// an error, not followed); a descriptor whose media type is neither an
// image manifest's nor an index's is not fetched as one; "no manifest for
// platform" names at most 10 of an index's platforms.
//
// # Durability
//
// A pulled image's root is recorded only once its blobs are durable. A
// store that is a cache.DeferredSyncer (localfs, and a tier over it) is
// asked to sync each blob's bytes but not its directory entry, and the
// pull ends with one SyncBlobs before the root is written: one directory
// fsync per pull instead of one per blob. A crash before then can lose blobs of that pull
// but never leaves a root pointing to missing ones.
//
// # Errors
//
// A registry's failure is a *RemoteError (errors.As), with the status and
// URL. One that gave no answer at all (refused, reset, timed out, name not
// found, answer cut off) also satisfies errors.Is(err, cache.ErrOffline)
// when nothing cached can stand in. Bytes that do not match their digest
// wrap cache.ErrDigestMismatch, and nothing of that image is recorded.
package registry
