// Package registry provides the Resolver, a cache.BaseImageResolver that
// keeps base images in a local store and revalidates them with one HEAD.
// The HTTP client it talks to registries with is package regclient; a
// cache.LayerCache whose blobs live in a registry repository is package
// ocirepo.
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
// A Resolver talks to registries through a regclient.Client: its own
// (regclient.New() with its defaults), or one given with WithClient and
// shared with an ocirepo.Cache or another resolver, which then share its
// logins, its view of each registry's rate limit and the registries it
// knows to be down:
//
//	client, _ := regclient.New(regclient.WithInsecureRegistries("registry.internal:5000"))
//	resolver, _ := registry.NewResolver(store, registry.WithClient(client))
//	shared, _ := ocirepo.New("registry.internal:5000/ci/cache", ocirepo.WithClient(client))
//
// The client sets credentials (the Docker keychain by default), plain
// HTTP (loopback registries, and those regclient.WithInsecureRegistries
// names), retries (429, 5xx and broken connections, honouring
// Retry-After) and the timeouts that bound a silent registry; see package
// regclient. A registry that times out is unreachable: if nothing is
// cached, the call fails with cache.ErrOffline once the client's tries
// are spent. A context's deadline or cancellation always wins: the call
// ends with the context's error, and nothing is served Stale.
//
// # Falling back
//
// A cached image is never held hostage by a failing registry: a resolve
// that has a cached copy waits for the registry at most the stale budget
// (WithStaleBudget, default 5s) whatever it does — silent, refusing
// connections, 5xx, 429, a Retry-After longer than the budget — and then
// serves the cached copy as Stale (regclient.WithFallback). A registry
// that timed out, or answered a 5xx with a Retry-After, is then known to
// be failing for a while (10 s; until the Retry-After), and such resolves
// serve the cached copy without asking it; an uncached image, which has
// nothing else to serve, keeps the client's retries and timeouts. Each
// Stale answer says why in ResolvedImage.Why, is counted in Stats
// (Stale, StaleBudgetSpent, StaleKnownDown) and logged (WithLogger).
//
// A registry's 404 for a reference is remembered for a while
// (WithNotFoundTTL, default 30s; at most 4096 references): resolves of it
// meanwhile fail with that 404 and no request (Stats'
// NotFoundRemembered), so a client asking again and again for a tag that
// does not exist costs the registry one request per TTL.
//
// Concurrent identical resolves, and concurrent downloads of one blob,
// share one request. A pull fetches the platforms' manifests at once and
// then the blobs in parallel (WithConcurrency).
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
// # Signatures, referrers and trust
//
// Referrers(ctx, repo, digest, maxAge) lists what refers to an image
// (OCI 1.1: signatures, attestations, SBOMs): the registry's referrers
// API, or its referrers tag schema ("sha256-<hex>") where it has none,
// stored as the root "<repo>:sha256-<hex>" and served Stale when the
// registry fails. WithReferrers(artifactTypes...) keeps, with every image
// a resolve pulls, its referrers and cosign's "sha256-<hex>.sig", ".att"
// and ".sbom" tags, with their manifests and blobs. Each such root is
// marked with the image it describes (cache.AnnotationSubject): the
// store's collector keeps it while it keeps the image, and Prune drops it
// once the image is gone, never for its own age.
//
// WithVerifier(v) checks images against a trust policy (package trust;
// registry itself links no sigstore): a pull right after its top
// manifest, before any blob is downloaded or its root recorded, and a
// cached copy each time it is served for a reference, from the
// signatures the store holds, so a verification works with the registry
// down. A refused image is an *UntrustedError (errors.Is(err,
// cache.ErrUntrusted)) naming the reference, digest, rule and reason;
// nothing of it is recorded. Verdicts are counted in Stats (Verified,
// Untrusted by reason, refused or warned) and explained in
// ResolvedImage.Why.Trust. A tag that names a signature
// ("sha256-<hex>.sig") is not itself checked.
//
// # Errors
//
// A registry's failure is a *regclient.RemoteError (errors.As), with the
// status and URL. One that gave no answer at all (refused, reset, timed
// out, name not found, answer cut off) also satisfies errors.Is(err,
// cache.ErrOffline) when nothing cached can stand in. A pull the
// rate-limit reserve holds back, or a 429, is ErrRateLimited. Bytes that do not match their digest
// wrap cache.ErrDigestMismatch, and nothing of that image is recorded.
package registry
