// Package mirror is a pull-through registry mirror served from a
// buildcache store: an http.Handler for the read side of the OCI
// distribution API that Docker (registry-mirrors), containerd (hosts.toml),
// buildkitd and the kubelet can be pointed at, so that every daemon pull
// gets the resolver's one-HEAD revalidation, stale-if-error and verified
// bytes from one shared cache.
//
//	res, _ := registry.NewResolver(store)
//	m, _ := mirror.New(res,
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
//     copied from the store's file, or read through the store's
//     verifying Get (see Verification). A blob not stored
//     is fetched with one upstream GET for every client asking meanwhile
//     (and any pull of it: the resolver's flight group), and streamed to
//     them while it is hashed and stored (registry.Resolver.StreamBlob):
//     the bytes go to a temp file (WithTempDir) that each client reads at
//     its own pace, so a slow client costs disk, never the others' speed
//     or the store's write, and no blob is held in memory. Content-Length
//     is the blob's size; the last byte waits until the blob is verified
//     and stored, and the connection is cut otherwise, so a client never
//     gets a complete response of bad bytes and nothing unverified is
//     stored. The download runs on the mirror's context: clients leaving
//     do not stop it, and it stores the blob even if all have left (Close
//     abandons it). A cold Range is served from the download as its bytes
//     arrive, its last byte also waiting for the verification. A blob
//     whose size the upstream's GET does not state is stored whole first
//     (at most 1 TiB), then served.
//   - Accept: an OCI manifest or index that a request's Accept header
//     does not list is MANIFEST_UNKNOWN, as distribution answers; a
//     Docker manifest list asked for by tag by a client not accepting
//     lists is answered with its linux/amd64 manifest, as distribution
//     does. A request with no Accept, or */*, gets what is stored
//     (distribution refuses it OCI types; see accept.go).
//   - Every other method: 405 UNSUPPORTED. Errors carry OCI error bodies
//     (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN, NAME_INVALID,
//     DIGEST_INVALID, MANIFEST_INVALID, UNSUPPORTED; UNAVAILABLE with 503
//     when the upstream is down and nothing is cached).
//
// # Verification
//
// No client ever receives a complete response, whole blob or range, of
// bytes that do not match the blob's digest, and a blob found not to
// match is removed from the store (the next request fetches it again).
// What is checked when:
//
//   - A blob not stored: hashed as it is downloaded and stored (the
//     store's Put); each response's last byte waits for the verdict.
//   - A stored blob, from a store that keeps files (cache.FileOpener:
//     localfs, a tier over one, which also covers buildcache serve): the
//     response's bytes are copied from the file to the connection
//     through a buffer (not with sendfile: stored.go says why), and its
//     last byte only once the store has found the whole blob good — by
//     its record of a hash of the same, unchanged file less than a
//     minute old, or else by hashing the file alongside the copy — and
//     the file unchanged since the response began. A range is held to the whole blob's verification the same
//     way, so a tail range of a blob verified moments ago costs a few
//     bytes, not a read of the blob. localfs's doc ("Verification") says
//     what "unchanged" rests on and what a tampering that keeps a file's
//     size, mtime and ctime would need.
//   - A stored blob from any other store (a tier's far tier): read whole
//     through the store's verifying Get; a range's last byte waits until
//     the rest of the blob has been read and matched.
//   - A manifest: read whole through Get before it is served.
//
// A response that fails a check is cut: the handler aborts and the
// client sees a short body and a broken connection, never a clean end.
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
// Upstream credentials and plain-HTTP hosts are those of the resolver's
// client (registry.WithClient; regclient.WithKeychain, WithAuth,
// WithInsecureRegistries).
//
// # Serving
//
// A Mirror is a plain http.Handler; a Server runs one as a mirror must
// run. NewServer(h, opts...) and Serve(ctx, listener) set the connection
// timeouts, serve TLS (WithTLS, 1.2 at least) and optionally a second
// listener for /metrics (WithMetricsListener). When ctx ends (SIGTERM)
// the Server stops accepting connections, lets requests in progress
// finish for WithShutdownGrace (30 s by default), cancels the rest, waits
// for their handlers, and then closes what WithCloseAfter names: the
// Mirror, whose Close abandons the downloads in flight, so nothing half
// fetched is stored. Server.Close cuts the grace short (a second
// signal). Wrap the Mirror in RequireAuth (an Htpasswd of bcrypt entries
// or a BearerToken) and AccessLog (through log/slog) before handing it
// over:
//
//	srv, _ := mirror.NewServer(mirror.AccessLog(mirror.RequireAuth(m, checker), logger),
//		mirror.WithCloseAfter(m), mirror.WithServerLogger(logger))
//	l, _ := net.Listen("tcp", "127.0.0.1:5000")
//	err := srv.Serve(ctx, l) // ctx from signal.NotifyContext
//
// `buildcache serve` is this with flags; see cmd/buildcache.
//
// # Scaling out
//
// Several mirror processes can serve one shared cache: give each a
// tier.New(near, far) store whose near tier is its own localfs directory
// and whose far tier is one S3 bucket (buildcache serve --cache tier://…).
// A blob or manifest any instance fetched is in the bucket, and every
// other instance serves it by digest with no upstream request, filling
// its near tier as it streams. Each instance keeps its own tag records
// (the near tier's roots), so the first request for a tag on an instance
// costs that instance one upstream request for the tag's manifest, and a
// fresh instance cannot serve a tag while the upstream is down, though it
// can serve every digest. No coordination between instances is needed:
// content is addressed by digest and stored verified.
package mirror
