// Package s3 provides a cache.LayerCache in an S3 bucket (AWS S3, MinIO,
// Ceph RGW, versitygw, ...) over aws-sdk-go-v2: the shared tier of a CI
// fleet, where every runner reuses the layers any runner uploaded.
//
//	client := s3.NewFromConfig(cfg) // aws-sdk-go-v2's service/s3
//	c, err := s3cache.New(client, "ci-cache", "myapp/")
//
// New makes no request; Check makes one, to report a missing bucket or
// wrong credentials early.
//
// # Layout
//
// Objects are where BuildKit's type=s3 cache (--cache-to/--cache-from
// type=s3,bucket=...,prefix=...) keeps them, so one bucket serves both:
//
//	<prefix><blobs_prefix>sha256:<hex>     blobs       (blobs_prefix: "blobs/")
//	<prefix><manifests_prefix><name>       BuildKit's cache manifests ("manifests/", name "buildkit")
//
// The prefix is used as given, as BuildKit does: "myapp/" (with the slash)
// puts blobs at "myapp/blobs/sha256:<hex>". WithBlobsPrefix and
// WithManifestsPrefix match BuildKit's blobs_prefix and manifests_prefix.
// BlobKey and ManifestKey return the keys. A prefix that would read as
// another path to a tool that maps keys to files ("../x/", "./x", "/x",
// a backslash, a control character) is an error.
//
// # Integrity
//
// Nothing unverified is served and nothing unverified is stored:
//
//   - Put hashes the stream while it uploads. A blob smaller than the part
//     size (default 5 MiB) goes in one PutObject, sent only after the whole
//     blob matched, whose x-amz-checksum-sha256 is the digest itself, so
//     the server checks it too. A larger blob goes in parts through the
//     SDK's transfer manager, each part with a SHA-256 checksum the server
//     verifies, and the upload is completed only after the stream matched
//     its digest and size; otherwise (and on a reader error, a cancelled
//     context or a failed part) it is aborted, and no object appears.
//   - Put creates the object only if nothing is at the key
//     (If-None-Match: *). Two runners writing one blob do not overwrite
//     each other: the one refused checks the size of what is there and
//     succeeds.
//   - Get verifies the stream against its digest as it is read. An object
//     replaced behind the cache's back fails the read with ErrCorrupt, is
//     deleted (only if it is still the object that was read: DeleteObject
//     with If-Match), and is counted in Stats().Corruptions.
//
// A process that dies in the middle of a multipart Put leaves an
// incomplete upload, never an object; SweepUploads (or a bucket lifecycle
// rule) aborts old ones.
//
// # Expiry
//
// With WithTouchRefresh(d), as with BuildKit's touch_refresh, a blob read
// (and verified) or put again more than d after it was last modified is
// copied onto itself, so that a lifecycle rule expiring objects by age
// removes only blobs nobody uses.
//
// # Errors
//
// A missing blob is cache.ErrNotFound. Failures of the server are wrapped
// with what went wrong in words and the bucket and endpoint they concern,
// and keep the SDK's error in the chain for errors.As:
//
//   - a bucket that does not exist: `bucket "x" does not exist at <endpoint>`,
//     which is also ErrNoSuchBucket (never ErrNotFound, although S3
//     answers a HeadObject in a missing bucket with the same 404 as a
//     missing key);
//   - wrong or unknown credentials: `access to bucket "x" at <endpoint>
//     denied`;
//   - an endpoint that does not answer: `cannot reach S3 endpoint
//     <endpoint>`, which is also cache.ErrOffline, with the bound that ran
//     out if one did ("no response headers within 10s"; see Timeouts).
//
// No error contains a credential.
//
// The credentials need s3:GetObject, s3:PutObject and s3:DeleteObject on
// the keys, and s3:ListBucket on the bucket for Walk, Check, GC, a lease
// write (one LIST of buildcache/gc/) and Index (and, on AWS, for a
// HeadObject of a missing key to be a 404 rather than a 403);
// SweepUploads and GC need s3:ListBucketMultipartUploads and
// s3:AbortMultipartUpload.
//
// # Timeouts
//
// Every wait on the endpoint is bounded: opening a connection (Connect,
// default 10s), the answer's status and headers (ResponseHeader, 10s,
// counted from when the request and its body have been handed over, so
// a slow connect counts too), and each wait for the next bytes of a body,
// either way (Stall, 30s). WithTimeouts sets them. The SDK sets none of
// these for S3: an endpoint that accepts connections and never answers
// would hold every call, and each of its retries, for ever.
//
// New leaves the client it is given alone (As returns it) and makes one
// of its own from that client's configuration (s3.New(client.Options(),
// ...)): the same credentials, region, endpoint, retryer and middleware,
// with an HTTP client that wraps the given one and holds each try to the
// bounds through the try's context. The SDK's advice for such overrides
// is per-operation options, but the transfer manager that uploads large
// blobs passes none of ours to the requests it makes; one client bounds
// every request in one place, and callers change nothing. Connect is set
// on the SDK's own HTTP client (*awshttp.BuildableClient, the default); a
// client with an HTTPClient of its own keeps that one's dial bound, and
// ResponseHeader still bounds connecting.
//
// A try that runs into a bound is not repeated (another would wait as
// long) and makes the endpoint known down for 10 s; so does a call whose
// every try failed to reach it (refused, reset: the retryer's tries and
// backoff). While the endpoint is known down, each call makes one try
// instead of the retryer's, and the first answer of any kind ends it. So
// an endpoint that is down costs one bounded wait, then one failed
// connection per call; a tier.Cache over the bucket leaves it alone for a
// while meanwhile (package tier).
//
// # Fleet
//
// Many processes over one bucket (mirror replicas, CI runners, each with
// a near tier of its own: package tier) share more than blobs, all under
// <prefix>buildcache/, with no database and no process talking to
// another; S3's conditional writes are the coordination:
//
//   - Records (cache.RootIndex, RootLookup, RootRecorder): one object per
//     reference, buildcache/records/<reference>, holding the root a
//     resolver recorded (the top digest, media type, size, reference and
//     when it was last checked). Root is one GET; RecordRoot one PUT
//     with If-Match (If-None-Match: * to create) on the ETag read, and a
//     write refused reads again and decides again, so a record is never
//     replaced by one checked earlier. A record of a new digest is written
//     only once its top is in the bucket, after what it reaches there is
//     leased (below).
//   - Claims (cache.RevalidationClaimer): a resolver about to ask a
//     registry about a reference whose record is older than its max age
//     (or that has none) writes a claim into the record, conditionally;
//     one process wins and asks, the others serve the record (or wait for
//     the winner's record when they have nothing), so a tag costs one
//     registry request per max age across the fleet. A claim expires
//     after WithClaimTTL (1 minute) if its holder died.
//   - Leases (cache.Leaser): an object per pull, buildcache/leases/<id>,
//     naming each blob before the pull looks at it or writes it, rewritten
//     every quarter of WithLeaseTTL (10 minutes) while the pull lives.
//     GC keeps what live leases name; a lease not rewritten for its TTL
//     (its process died) is ignored, then deleted.
//   - Collectors announce themselves (buildcache/gc/<start>-<window>-<id>)
//     and delete only within their window; a lease write that finds one
//     waits until it is gone (sweep.go says why that is enough).
//
// Clocks: leases and collectors' markers are judged by the endpoint's
// clock (LastModified against the Date of a response); records and
// claims carry their writers' clocks, where a few seconds of skew cost an
// extra registry request, never a wrong answer.
//
// A store without conditional writes (one that ignores If-Match and
// If-None-Match on PUT) still works: records are written last writer
// wins, so a record may go back to an older check (one more registry
// request later), and racing claims may both win (each process asks the
// registry, as without a fleet). Leases, collectors and what a
// collection keeps need no conditional write. versitygw (v1.8.0) and
// MinIO honour both on PUT, with one winner among racing writers; MinIO
// ignores If-Match on DELETE, so a record pruned or an expired lease
// deleted while its writer rewrote it goes (the writer writes it again:
// GC looks at a lease again right before deleting it).
//
// # Collection
//
// GC collects the bucket: it keeps every blob that a record reaches
// (walking the manifests in the bucket), that BuildKit's own cache
// manifests (<prefix>manifests/…, read as BuildKit writes them: their
// layers name blobs) list, that a live lease names, or that was modified
// less than GCMinAge ago (1 hour: BuildKit uploads blobs before the
// manifest that lists them, under no lease). Of the rest, GCTTL removes
// those not used for longer than the TTL and GCMaxBytes the least
// recently used until the bucket fits; a blob's last use is its
// LastModified, which WithTouchRefresh refreshes at most once per
// interval when it is read or put again, as BuildKit's touch_refresh
// does. A BuildKit manifest written during the collection that lists a
// blob it removed (BuildKit's export found the blob there before the
// removal) is deleted, so BuildKit misses the cache cleanly instead of
// failing on a 404. GCPruneRecords drops old records first; expired
// leases, dead collectors' markers and multipart uploads older than
// GCMinAge go too. GCDryRun removes nothing.
//
// Its cost: a LIST of the leases, records and manifests (a page per 1000
// keys), a GET of each lease, record, BuildKit manifest and manifest the
// records reach, one listing of the blobs (a page per 1000 keys), and a
// DeleteObjects per 1000 blobs removed. Its memory: the digests the roots
// reach and the leases name (32 bytes each, in a map), and at most
// 100,000 candidates for the budget; with more, it lists the blobs again
// after removing those. A second collector that starts while one runs
// does nothing (Skipped).
//
// # Memory
//
// A Put of a blob at least the part size buffers up to (concurrency + 2)
// part sizes (the transfer manager's part buffers and its first part):
// about 20 MiB with the defaults (5 MiB parts, 2 in flight). A Get reads
// ahead up to 768 KiB.
//
// # Concurrency
//
// A Cache is safe for concurrent use, and many processes and machines may
// share one bucket and prefix.
package s3
