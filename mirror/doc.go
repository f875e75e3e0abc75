// Package mirror is a pull-through registry mirror served from a
// buildcache store: an http.Handler for the read side of the OCI
// distribution API that Docker (registry-mirrors), containerd (hosts.toml),
// buildkitd and the kubelet can be pointed at, so that every daemon pull
// gets the resolver's one-HEAD revalidation, stale-if-error and verified
// bytes from one shared cache.
//
//	res, _ := registry.NewResolver(store)
//	m, _ := mirror.New(res, store,
//		mirror.WithUpstream("registry-1.docker.io"),
//		mirror.WithUpstreams(map[string]string{"docker.io": "registry-1.docker.io", "ghcr.io": "ghcr.io"}))
//	http.ListenAndServe("127.0.0.1:5000", m)
//
// # What it serves
//
//   - GET /v2/: 200 with Docker-Distribution-API-Version: registry/2.0.
//   - HEAD and GET /v2/<name>/manifests/<tag|digest>, with the manifest's
//     own media type as Content-Type, Content-Length and
//     Docker-Content-Digest. A tag goes through
//     registry.Resolver.ResolveTop: one upstream HEAD per request (none
//     within WithMaxAge), a GET only when the tag moved, and the cached
//     copy when the upstream fails (stale-if-error). Only the top manifest
//     is fetched for a tag: an index's platform manifests and blobs are
//     fetched when a client asks for them by digest. A digest that is
//     stored is served with no upstream request.
//   - HEAD and GET /v2/<name>/blobs/<digest>, with one byte range
//     (bytes=a-b, a-, -n; 206 with Content-Range, 416 when it cannot be
//     satisfied; several ranges get the whole blob). A stored blob is
//     streamed from the store, whose reader verifies it; the last byte is
//     held back until the verification passes, and the connection is cut
//     otherwise, so a client never gets a complete response of bad bytes.
//   - Every other method: 405 UNSUPPORTED. Errors carry OCI error bodies
//     (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN, NAME_INVALID,
//     DIGEST_INVALID, MANIFEST_INVALID, UNSUPPORTED; UNAVAILABLE with 503
//     when the upstream is down and nothing is cached).
//
// Names are checked against the distribution spec's grammar, tags and
// digests (cache.ParseDigest) too, before anything is looked up.
//
// # Upstreams
//
// containerd's ?ns=<registry> query selects the upstream from
// WithUpstreams; a request without it goes to WithUpstream. An ns that is
// not mapped is NAME_UNKNOWN: the mirror never fetches from a host a
// client names. For Docker Hub (docker.io, index.docker.io,
// registry-1.docker.io) a one-component name "alpine" is "library/alpine".
// Upstream credentials and plain-HTTP hosts are the resolver's
// (registry.WithKeychain, WithAuth, WithInsecureRegistries).
//
// # Not done yet (issue 13 is open)
//
//   - Streaming a blob not yet stored to its clients while it is written
//     and hashed: today it is fetched whole into the store (once for all
//     concurrent clients: the resolver's flight group), verified, then
//     served, so a cold large layer's first byte waits for its download.
//   - The `buildcache serve` command, TLS, client authentication, access
//     logs, graceful shutdown.
//   - Accept-header negotiation (a client that accepts only Docker media
//     types is served the upstream's manifest as it is).
//   - Tests with real clients (buildkitd, containerd's ctr; skopeo runs
//     when installed), the distribution-spec conformance pull workflow,
//     the scale-out test on S3, and the benchmark against distribution's
//     proxy mode.
package mirror
