// Package s3loc describes where an s3.Cache keeps its objects and how its
// client reaches them, as plain data with no dependency: code that only
// needs the bucket and the key layout (BuildKit's type=s3 cache entries,
// in buildkit/cacheentry) names them without linking the AWS SDK.
//
// The s3 package returns a Location from Cache.Location (s3.Location is
// this type).
package s3loc

// Defaults, named the way BuildKit's type=s3 cache names its attributes.
const (
	// DefaultBlobsPrefix is where blobs go under the prefix: BuildKit's
	// blobs_prefix default.
	DefaultBlobsPrefix = "blobs/"
	// DefaultManifestsPrefix is where BuildKit keeps its cache manifests
	// under the prefix: its manifests_prefix default.
	DefaultManifestsPrefix = "manifests/"
)

// Location is where a cache keeps its objects and how its client reaches
// them, in the terms of BuildKit's type=s3 cache attributes (bucket,
// prefix, blobs_prefix, manifests_prefix, region, endpoint_url,
// use_path_style), so that a BuildKit cache can be pointed at the same
// keys without re-deriving them from whole keys. A blob's key is
// Prefix+BlobsPrefix+"sha256:<hex>", a BuildKit cache manifest's
// Prefix+ManifestsPrefix+<name>.
type Location struct {
	Bucket          string
	Prefix          string // as given to s3.New: "ci/"
	BlobsPrefix     string // under Prefix: "blobs/" (s3.WithBlobsPrefix)
	ManifestsPrefix string // under Prefix: "manifests/" (s3.WithManifestsPrefix)
	// Region is the client's region; "" if it has none.
	Region string
	// Endpoint is the client's BaseEndpoint ("http://minio:9000"); ""
	// means AWS's endpoint for Region.
	Endpoint string
	// PathStyle is the client's UsePathStyle (MinIO, Ceph and versitygw
	// want it).
	PathStyle bool
}
