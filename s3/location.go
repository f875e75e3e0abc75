package s3

// Location is where a Cache keeps its objects and how its client reaches
// them, in the terms of BuildKit's type=s3 cache attributes (bucket,
// prefix, blobs_prefix, manifests_prefix, region, endpoint_url,
// use_path_style), so that a BuildKit cache can be pointed at the same
// keys without re-deriving them from whole keys.
type Location struct {
	Bucket          string
	Prefix          string // as given to New: "ci/"
	BlobsPrefix     string // under Prefix: "blobs/" (WithBlobsPrefix)
	ManifestsPrefix string // under Prefix: "manifests/" (WithManifestsPrefix)
	// Region is the client's region; "" if it has none.
	Region string
	// Endpoint is the client's BaseEndpoint ("http://minio:9000"); ""
	// means AWS's endpoint for Region.
	Endpoint string
	// PathStyle is the client's UsePathStyle (MinIO, Ceph and versitygw
	// want it).
	PathStyle bool
}

// Location reports the Cache's key layout and its client's region and
// endpoint. It makes no request.
func (c *Cache) Location() Location {
	co := c.client.Options()
	l := Location{
		Bucket:          c.bucket,
		Prefix:          c.prefix,
		BlobsPrefix:     c.opts.blobsPrefix,
		ManifestsPrefix: c.opts.manifestsPrefix,
		Region:          co.Region,
		PathStyle:       co.UsePathStyle,
	}
	if co.BaseEndpoint != nil {
		l.Endpoint = *co.BaseEndpoint
	}
	return l
}
