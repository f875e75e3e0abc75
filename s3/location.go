package s3

import "github.com/buildcache/buildcache/s3/s3loc"

// Location is where a Cache keeps its objects and how its client reaches
// them (bucket, key prefixes, region, endpoint). It is s3loc.Location,
// declared in a package of its own so that code which only needs the
// layout (BuildKit's cache entries) does not link the AWS SDK.
type Location = s3loc.Location

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
