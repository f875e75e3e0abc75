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
// the keys, and s3:ListBucket on the bucket for Walk and Check (and, on
// AWS, for a HeadObject of a missing key to be a 404 rather than a 403);
// SweepUploads needs s3:ListBucketMultipartUploads and
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
