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
//     stored is served with no upstream request under a name known to
//     hold it (# Repositories).
//   - HEAD and GET /v2/<name>/blobs/<digest>, with one byte range
//     (bytes=a-b, a-, -n; 206 with Content-Range, 416 when it cannot be
//     satisfied; several ranges get the whole blob). A stored blob is
//     copied from the store's file, or read through the store's
//     verifying Get (see Verification), under a name known to hold it
//     (# Repositories). A blob not stored
//     is fetched with one upstream GET for every client asking meanwhile
//     (and any pull of it: the resolver's flight group), and streamed to
//     them while it is hashed and stored: see "Cold blobs".
//   - Accept: an OCI manifest or index that a request's Accept header
//     does not list is MANIFEST_UNKNOWN, as distribution answers; a
//     Docker manifest list asked for by tag by a client not accepting
//     lists is answered with its linux/amd64 manifest, as distribution
//     does. A request with no Accept, or */*, gets what is stored
//     (distribution refuses it OCI types; see accept.go).
//   - GET /v2/<name>/tags/list, with n and last: the upstream's list, or,
//     when the upstream cannot answer (unreachable, 5xx, 429), the tags
//     the store's roots hold for the repository (those the resolver
//     recorded: every tag the mirror, or anything else over the store,
//     resolved). Either way in lexical order, n tags after last, with a
//     Link rel="next" to the next page, as the distribution spec pages
//     them, also when the upstream ignores n or sends no Link. The roots
//     are read once a minute at most, whatever the number of requests
//     (see tagview.go), and what the mirror serves shows at once.
//   - GET /v2/<name>/referrers/<digest>[?artifactType=]: the subject's
//     referrers as an OCI index (OCI distribution spec 1.1), from the
//     upstream's referrers API or, for an upstream without one, its
//     referrers tag schema ("sha256-<hex>" tag); kept with the subject
//     (registry.Resolver.Referrers) and served from the store when the
//     upstream is down. artifactType is applied here, whatever the
//     upstream supports, and said with OCI-Filters-Applied. A subject
//     nobody refers to has an empty index. The referrers listed may be
//     fetched by digest under the name. cosign's "sha256-<hex>.sig",
//     ".att" and ".sbom" signatures are ordinary tags.
//   - With a trust policy on the resolver (registry.WithVerifier), a tag
//     whose image the policy refuses is 403 DENIED, naming the digest and
//     the reason (failed responses reason "untrusted"); content asked for
//     by digest is served as it is.
//   - Every other method: 405 UNSUPPORTED. Errors carry OCI error bodies
//     (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN, NAME_INVALID,
//     DIGEST_INVALID, MANIFEST_INVALID, PAGINATION_NUMBER_INVALID,
//     UNSUPPORTED, DENIED; UNAVAILABLE with 503 when the upstream is down and
//     nothing is cached).
//
// # Cold blobs
//
// A blob not stored is downloaded once (registry.Resolver.StreamBlob)
// into the store's own ingestion of it when the store is a cache.Ingester
// (localfs, a tier over it): a locked temp file in the store's temp
// directory, under its byte budget and free-space floor, that every
// client reads at its own pace while it is written and hashed, and that
// becomes the stored blob when verified. So a cold blob is written to disk
// once, in the store; a process killed meanwhile leaves the file for the
// store's next Open or GC to sweep. A store that cannot ingest gets the
// bytes through Put while they are copied for the clients to a temp file
// in WithTempDir. Either way a slow client costs disk, never the others'
// speed or the store's write, and no blob is held in memory.
// Content-Length is the blob's size; the last byte waits until the blob
// is verified and stored, and the connection is cut otherwise, so a
// client never gets a complete response of bad bytes and nothing
// unverified is stored. A cold Range is served from the download as its
// bytes arrive, its last byte also waiting for the verification.
//
// Every download is bounded before it starts: by the size an image
// manifest served under the same name gave the blob (a client pulls the
// manifest first; the upstream's Content-Length must agree, and a body
// that does not stop there fails), else by the upstream's Content-Length.
// Once its size is known the download runs on the mirror's context:
// clients leaving do not stop it, and it stores the blob even if all have
// left (Close abandons it). A blob whose size neither states is stored
// whole first (within the store's budget and free-space floor, and at
// most 1 TiB), then served, and its download stops when its last client
// leaves. At most WithMaxUpstreamFetches (32) downloads run at once; the
// others wait in line, holding only their clients' connections. A
// response whose client takes no write for WithStallTimeout (1 minute) is
// closed, freeing its connection, file and lease.
//
// A failure known before the first byte gets an OCI error body: 404
// BLOB_UNKNOWN when the upstream has no such blob, 502 when it served
// bytes that are not the blob, 507 UNAVAILABLE when the store has no room
// for it, 503 UNAVAILABLE when the upstream is down; one found later cuts
// the response. Every failed or cut response is counted by reason (Stats,
// the Reason constants; metrics.NewMirrorCollector exports them) and
// AccessLog logs its reason and error; Stats also counts the downloads
// whose bytes did not match their digest.
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
// digests (cache.ParseContentDigest: sha256 or sha512, lower-case hex of
// the algorithm's length) too, before anything is looked up.
//
// # Repositories
//
// A store is addressed by digest alone; a registry serves a digest only
// under a repository that holds it, so that a blob of a private
// repository cannot be read through a name one may pull. The mirror does
// the same: it serves a stored blob, or a manifest by digest, under a
// name only when it knows the name holds it there: a manifest it served
// under that name (by tag, or by a digest it knew) is it or references
// it, or the upstream said so (one HEAD under the client's name, shared
// by concurrent requests and remembered), or, when the upstream cannot
// answer, an image that a stored tag of that repository points to
// references it. Otherwise the answer is the upstream's (404
// BLOB_UNKNOWN or MANIFEST_UNKNOWN), or 503 when it cannot answer. A pull
// asks for the tag first, so every request of a pull is known with no
// upstream request; a pull by digest on a mirror that has served nothing
// of the image under that name costs one HEAD of the top manifest. What
// the mirror knows is a bounded set of (repository, digest) pairs in
// memory (see scope.go).
//
// # Digests
//
// The store keeps sha256 names only (cache.ValidateDigest): each blob has
// one name, which localfs's blobs/sha256/<hex>, the s3 keys and every
// backend's leases and collectors rely on. A manifest or blob asked for
// by a sha512 digest is therefore passed through from the upstream, not
// stored: one upstream request per client request, under the client's
// name (so the upstream decides what the name may read), verified against
// the digest as it is sent (a manifest whole, at most 4 MiB, before it is
// sent; a blob's last byte held back until it matches, the connection cut
// otherwise), within the bounds of any blob download (1 TiB). A Range of
// such a blob is answered with the whole blob (200): bytes short of the
// end could not be verified. sha512 content is rare (registries compute
// sha256 for what is pushed); teaching every backend a second name for
// the same bytes is the larger change, left until it is not rare.
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
// signal). Wrap the Mirror in an Auth (see Authentication) and AccessLog
// (through log/slog) before handing it over:
//
//	auth, _ := mirror.NewAuth(checker, mirror.WithAuthLogger(logger))
//	health, _ := mirror.NewHealth(res.Store(), mirror.WithHealthLogger(logger))
//	srv, _ := mirror.NewServer(mirror.AccessLog(auth.Wrap(m), logger),
//		mirror.WithCloseAfter(m), mirror.WithServerLogger(logger), mirror.WithHealth(health))
//	l, _ := net.Listen("tcp", "127.0.0.1:5000")
//	err := srv.Serve(ctx, l) // ctx from signal.NotifyContext
//
// `buildcache serve` is this with flags; see cmd/buildcache.
//
// # Health
//
// NewHealth(store) answers /healthz (200 while the process serves, also
// while it shuts down) and /readyz (200 while the store takes writes and
// shutdown has not begun, else 503 with a one-line reason), and
// WithHealth(h) serves both on every listener of a Server ahead of its
// handler, so probes need no credentials and are not access-logged (the
// Health logs changes of readiness only). Readiness probes the store with
// cache.WriteProber (localfs: a 4 KiB file created, synced and removed in
// its temp directory, so a read-only or full disk or a closed store is
// not ready), once per 2 s at most, waiting 2 s at most for a disk that
// hangs. It does not ask the upstreams or a tier's far tier: an upstream
// outage would take every node's mirror out of rotation together while
// each still serves what it holds. The Server makes it not ready as soon
// as its context ends; WithShutdownDelay then keeps serving for a while
// before the listeners close, so a load balancer stops sending requests
// first. See Health.
//
// # Authentication
//
// A Checker says whether a request carries valid credentials: an
// Htpasswd (bcrypt entries, as htpasswd -B writes them), a BearerToken,
// AnyOf them, or a CheckerFunc. NewAuth(checker, opts...).Wrap(h) (or
// RequireAuth(h, checker), with the defaults) answers a request without
// good credentials 401 with a Basic challenge and an UNAUTHORIZED body,
// and keeps a bcrypt a check from costing the mirror its cores:
//
//   - good credentials are remembered for WithVerifiedTTL (a minute) by
//     an HMAC of them under a per-process key, so a client pulling 100
//     blobs costs one bcrypt;
//   - failed logins are limited per client address (IPv6 per /64) by
//     WithFailedLoginLimit (10 a minute): beyond it a client is answered
//     429 TOOMANYREQUESTS with Retry-After, no bcrypt run, its
//     credentials not looked at; at most 10,000 addresses are tracked;
//   - WithConcurrentChecks (1) checks run at once, so guesses from many
//     addresses take one core at most; beyond 64 waiting, 503 UNAVAILABLE
//     with Retry-After.
//
// Auth.Stats counts checks, failed logins and both refusals;
// WithAuthLogger logs each address as it runs out, and AccessLog logs
// each refused request with its status, never a credential. Behind a
// reverse proxy every client has the proxy's address: use
// WithFailedLoginLimit(0, 0) and limit there.
//
// # Scaling out
//
// Several mirror processes (and CI runners using the same cache) can
// serve as one: give each a tier.New(near, far) store whose near tier is
// its own localfs directory and whose far tier is one S3 bucket
// (buildcache serve --cache tier://…). No process talks to another; the
// bucket is the only thing they share, and S3's conditional writes the
// only coordination (the s3 package's doc, # Fleet).
//
// Shared, in the bucket: every blob and manifest by digest (one replica
// fetches it, every replica serves it with no upstream request), and a
// record per tag (its top digest and when it was last checked), written
// conditionally so racing replicas never lose each other's. Each replica
// keeps: its near tier (a copy of what it served, filled from the bucket
// as it streams), its own copy of the tag records it used, and what it
// knows of which repository holds what (# Repositories: a fresh replica
// learns it from the first request of a pull, or, for a pull by digest
// of a manifest it has not served, with one upstream HEAD).
//
// What a client sees: a tag checked by any replica less than WithMaxAge
// ago is served by every replica with no upstream request, a fresh
// replica included; an older one is revalidated by one replica (it claims
// the revalidation in the record) while the others serve the record's
// digest, so a tag costs one upstream request per max age across the
// fleet; a tag nobody has yet is pulled by one replica while the others
// wait for its record. With the upstream down, a fresh replica serves
// every tag the fleet has recorded (Stale past the max age). A tag moved
// upstream is seen by the fleet within one max age; replicas may answer a
// tag with different digests for at most that long, as one replica would.
// Digests are served verified wherever they come from.
//
// The bucket is collected by `buildcache gc --cache s3://…` (or --far
// with the tier's URL) under a byte budget: it keeps whatever a record or
// BuildKit's own S3 cache manifests reach and whatever a pull in progress
// on any replica holds in a lease (an object in the bucket, expiring when
// its replica stops renewing it), so a replica killed in the middle of a
// pull leaves nothing the next collection does not remove. A bucket that
// does not answer leaves each replica its near tier and the upstream
// (package tier, # A far tier that is down).
//
// The bucket must offer what S3, MinIO, Ceph RGW and versitygw do: GET,
// PUT, DELETE, LIST (ListObjectsV2), multipart uploads and conditional
// writes (If-None-Match: * and If-Match on PUT). On a store without
// conditional writes the fleet still serves correctly and the collector
// stays safe, but a tag may cost one upstream request per replica per
// max age, as without a fleet.
package mirror
