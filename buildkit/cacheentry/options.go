package cacheentry

import (
	"errors"
	"fmt"
	"maps"

	"github.com/moby/buildkit/client"
)

// Defaults of the cache name, per backend. They are BuildKit's own where
// BuildKit has one, so buildctl and docker buildx find the same cache.
const (
	// DefaultLocalTag is the tag in index.json of a type=local cache
	// (BuildKit's default tag).
	DefaultLocalTag = "latest"
	// DefaultRegistryTag is the tag of a type=registry cache when the
	// reference has none (buildx's documentation uses it too).
	DefaultRegistryTag = "buildcache"
	// DefaultS3Name is the cache manifest name of a type=s3 cache
	// (BuildKit's default name).
	DefaultS3Name = "buildkit"
)

// Option configures For, Local, Registry and S3: the one option family of
// this package. An option that does not apply to the backend an entry is
// made for is ignored (WithRepository for a type=local entry, say),
// except where the doc says it is an error.
type Option func(*options) error

type options struct {
	mode        Mode
	ignoreError bool
	name        string
	importOnly  bool
	exportOnly  bool
	compression string
	attrs       map[string]string
	repository  string
	insecure    bool
	region      string
	endpoint    string
	pathStyle   bool
	endpointSet bool
	creds       *[3]string
}

// WithMode sets how much an export keeps (default ModeMax).
func WithMode(m Mode) Option {
	return func(o *options) error {
		if m != ModeMax && m != ModeMin {
			return fmt.Errorf("cacheentry: WithMode(%v): unknown mode", m)
		}
		o.mode = m
		return nil
	}
}

// WithIgnoreError lets the build succeed when exporting the cache fails
// (ignore-error=true). Default: a failed export fails the build.
func WithIgnoreError() Option {
	return func(o *options) error {
		o.ignoreError = true
		return nil
	}
}

// WithName names the cache: the tag in index.json (type=local,
// default DefaultLocalTag), the tag of the cache image (type=registry,
// default DefaultRegistryTag) or the manifest name (type=s3, default
// DefaultS3Name; "a;b" imports from a and exports to both). Builds that
// should not share a cache use different names.
func WithName(name string) Option {
	return func(o *options) error {
		if name == "" {
			return errors.New("cacheentry: WithName: empty name")
		}
		o.name = name
		return nil
	}
}

// WithImportOnly makes only an import: builds read the cache but never
// write it (for builds of untrusted branches, say). Default: both.
func WithImportOnly() Option {
	return func(o *options) error {
		o.importOnly = true
		return nil
	}
}

// WithExportOnly makes only an export: the build starts cold and writes
// the cache. Default: both.
func WithExportOnly() Option {
	return func(o *options) error {
		o.exportOnly = true
		return nil
	}
}

// WithCompression sets the compression of exported layers: "gzip" (the
// default), "zstd", "estargz" or "uncompressed". BuildKit's s3 cache always
// uses gzip and ignores it, so it is an error there.
func WithCompression(c string) Option {
	return func(o *options) error {
		switch c {
		case "gzip", "zstd", "estargz", "uncompressed":
			o.compression = c
			return nil
		}
		return fmt.Errorf("cacheentry: WithCompression(%q): want gzip, zstd, estargz or uncompressed", c)
	}
}

// WithAttr sets any other attribute BuildKit's cache backends know
// ("compression-level", "force-compression", "image-manifest",
// "oci-mediatypes", "touch_refresh", "upload_parallelism", ...) on the
// import and the export. It overrides what the other options set.
func WithAttr(key, value string) Option {
	return func(o *options) error {
		if key == "" {
			return errors.New("cacheentry: WithAttr: empty key")
		}
		if o.attrs == nil {
			o.attrs = map[string]string{}
		}
		o.attrs[key] = value
		return nil
	}
}

// WithRepository names the repository BuildKit's cache goes to when For
// is given a RegistryRepository cache ("harbor.example.com/ci/cache"); by
// default it is the cache's own (its Repository method).
func WithRepository(repo string) Option {
	return func(o *options) error {
		o.repository = repo
		return nil
	}
}

// WithInsecureRegistry lets BuildKit use plain HTTP to the cache's
// registry (registry.insecure=true). Default: the daemon's registry
// configuration decides.
func WithInsecureRegistry() Option {
	return func(o *options) error {
		o.insecure = true
		return nil
	}
}

// WithS3Region sets the bucket's region. Default: the S3Located
// cache's region (its client's); if it has none, the daemon's $AWS_REGION.
func WithS3Region(region string) Option {
	return func(o *options) error {
		o.region = region
		return nil
	}
}

// WithS3Endpoint sets the S3 endpoint as the daemon reaches it
// ("http://minio:9000") and whether it wants path-style requests (MinIO,
// Ceph and versitygw do). Default: the *s3.Cache client's BaseEndpoint and
// UsePathStyle; none means AWS.
func WithS3Endpoint(url string, pathStyle bool) Option {
	return func(o *options) error {
		if url == "" {
			return errors.New("cacheentry: WithS3Endpoint: empty URL")
		}
		o.endpoint, o.pathStyle, o.endpointSet = url, pathStyle, true
		return nil
	}
}

// WithS3Credentials hands static credentials to the daemon in the cache
// attributes. Default: none; the daemon uses its own (its environment,
// shared config files or instance role), which is better: attributes
// travel in the solve request.
func WithS3Credentials(accessKeyID, secretAccessKey, sessionToken string) Option {
	return func(o *options) error {
		if accessKeyID == "" || secretAccessKey == "" {
			return errors.New("cacheentry: WithS3Credentials: access key ID and secret are required")
		}
		o.creds = &[3]string{accessKeyID, secretAccessKey, sessionToken}
		return nil
	}
}

func makeOptions(opts []Option) (*options, error) {
	o := &options{}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.importOnly && o.exportOnly {
		return nil, errors.New("cacheentry: either WithImportOnly or WithExportOnly, not both")
	}
	return o, nil
}

// entries makes one import and one export of type typ with attrs, plus
// the common attributes. Export-only attributes stay off the import.
func (o *options) entries(typ string, importAttrs, exportAttrs map[string]string) Entries {
	var e Entries
	if !o.exportOnly {
		a := maps.Clone(importAttrs)
		maps.Copy(a, o.attrs)
		e.Imports = []client.CacheOptionsEntry{{Type: typ, Attrs: a}}
	}
	if !o.importOnly {
		a := maps.Clone(exportAttrs)
		a["mode"] = o.mode.String()
		if o.ignoreError {
			a["ignore-error"] = "true"
		}
		if o.compression != "" {
			a["compression"] = o.compression
		}
		maps.Copy(a, o.attrs)
		e.Exports = []client.CacheOptionsEntry{{Type: typ, Attrs: a}}
	}
	return e
}

func (o *options) nameOr(def string) string {
	if o.name != "" {
		return o.name
	}
	return def
}
