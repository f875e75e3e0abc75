package cacheentry

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/distribution/reference"

	"github.com/buildcache/buildcache/s3/s3loc"
)

// defaultIndexTag is the tag at which the repository-backed LayerCache
// keeps its index unless told otherwise. Registry refuses it: a BuildKit
// export there would overwrite that index. It is declared here, not
// imported, so that this package does not link the registry client; a
// test keeps it equal to ocirepo.DefaultIndexTag. (For
// finds a cache's own tag through RegistryRepository.IndexTag.)
const defaultIndexTag = "buildcache-index"

// Local is a type=local cache in dir, an OCI image layout directory
// (localfs.Open makes one; BuildKit's client creates it otherwise). The
// directory is written by the BuildKit client, in this process.
func Local(dir string, opts ...Option) (Entries, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return Entries{}, err
	}
	if dir == "" {
		return Entries{}, errors.New("cacheentry: Local: empty directory")
	}
	return localEntries(dir, o)
}

func localEntries(dir string, o *options) (Entries, error) {
	tag := o.nameOr(DefaultLocalTag)
	return o.entries("local",
		map[string]string{"src": dir, "tag": tag},
		map[string]string{"dest": dir, "tag": tag}), nil
}

// Registry is a type=registry cache at ref ("registry.example.com/
// ci/cache:main"); without a tag, WithName's (default
// DefaultRegistryTag).
func Registry(ref string, opts ...Option) (Entries, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return Entries{}, err
	}
	return registryEntries(ref, o)
}

func registryEntries(ref string, o *options) (Entries, error) {
	parsed, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return Entries{}, fmt.Errorf("cacheentry: registry cache %q: %w", ref, err)
	}
	if _, ok := parsed.(reference.Digested); ok {
		return Entries{}, fmt.Errorf("cacheentry: registry cache %q: a digest cannot be exported to; use a tag", ref)
	}
	if t, ok := parsed.(reference.Tagged); ok {
		if o.name != "" && o.name != t.Tag() {
			return Entries{}, fmt.Errorf("cacheentry: registry cache %q has tag %q and WithName says %q", ref, t.Tag(), o.name)
		}
	} else {
		tag := o.nameOr(DefaultRegistryTag)
		if parsed, err = reference.WithTag(parsed, tag); err != nil {
			return Entries{}, fmt.Errorf("cacheentry: registry cache %q: tag %q: %w", ref, tag, err)
		}
		ref = strings.TrimSuffix(ref, "/") + ":" + tag
	}
	if parsed.(reference.Tagged).Tag() == defaultIndexTag {
		return Entries{}, fmt.Errorf("cacheentry: registry cache %q: tag %q is where a repository LayerCache keeps its index; BuildKit would overwrite it", ref, defaultIndexTag)
	}
	attrs := map[string]string{"ref": ref}
	if o.insecure {
		attrs["registry.insecure"] = "true"
	}
	return o.entries("registry", attrs, maps.Clone(attrs)), nil
}

// S3 is a type=s3 cache in bucket under prefix, laid out as BuildKit
// and the s3 package lay it out (<prefix>blobs/sha256:<hex>,
// <prefix>manifests/<name>). Set the region and, for other than AWS, the
// endpoint with WithS3Region and WithS3Endpoint.
func S3(bucket, prefix string, opts ...Option) (Entries, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return Entries{}, err
	}
	if bucket == "" {
		return Entries{}, errors.New("cacheentry: S3: empty bucket name")
	}
	return s3Attrs(bucket, prefix, s3loc.DefaultBlobsPrefix, s3loc.DefaultManifestsPrefix, o)
}

// s3Entries takes the layout and the client settings of an s3 cache; the
// options override the region and the endpoint.
func s3Entries(l s3loc.Location, o *options) (Entries, error) {
	oo := *o
	if oo.region == "" {
		oo.region = l.Region
	}
	if !oo.endpointSet && l.Endpoint != "" {
		oo.endpoint, oo.pathStyle, oo.endpointSet = l.Endpoint, l.PathStyle, true
	}
	return s3Attrs(l.Bucket, l.Prefix, l.BlobsPrefix, l.ManifestsPrefix, &oo)
}

func s3Attrs(bucket, prefix, blobsPrefix, manifestsPrefix string, o *options) (Entries, error) {
	if o.compression != "" {
		return Entries{}, errors.New("cacheentry: s3 cache: BuildKit's s3 cache always compresses with gzip; WithCompression does not apply")
	}
	attrs := map[string]string{
		"bucket":           bucket,
		"prefix":           prefix,
		"blobs_prefix":     blobsPrefix,
		"manifests_prefix": manifestsPrefix,
		"name":             o.nameOr(DefaultS3Name),
	}
	if o.region != "" {
		attrs["region"] = o.region
	}
	if o.endpointSet {
		// BuildKit applies use_path_style only together with endpoint_url.
		attrs["endpoint_url"] = o.endpoint
		attrs["use_path_style"] = strconv.FormatBool(o.pathStyle)
	}
	if o.creds != nil {
		attrs["access_key_id"], attrs["secret_access_key"] = o.creds[0], o.creds[1]
		if o.creds[2] != "" {
			attrs["session_token"] = o.creds[2]
		}
	}
	return o.entries("s3", attrs, maps.Clone(attrs)), nil
}
