package buildkit

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/client"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/s3"
)

// ErrUnsupportedCache: CacheFor was given a cache.LayerCache that has no
// BuildKit cache backend of the same layout.
var ErrUnsupportedCache = errors.New("no BuildKit cache backend for this cache")

// CacheEntries are BuildKit cache imports and exports: put them in
// client.SolveOpt.CacheImports and CacheExports.
//
// BuildKit's client writes into the import entries' Attrs (a local
// import gets the digest its tag points to), so an entry used in one
// Solve must not be reused for the next: call CacheFor again, or Clone.
type CacheEntries struct {
	Imports []client.CacheOptionsEntry
	Exports []client.CacheOptionsEntry
}

// Append returns e followed by more: BuildKit imports from every import
// (a local store and a shared bucket, say) and exports to every export.
func (e CacheEntries) Append(more ...CacheEntries) CacheEntries {
	out := e.Clone()
	for _, m := range more {
		m = m.Clone()
		out.Imports = append(out.Imports, m.Imports...)
		out.Exports = append(out.Exports, m.Exports...)
	}
	return out
}

// Clone copies e, attribute maps included.
func (e CacheEntries) Clone() CacheEntries {
	clone := func(in []client.CacheOptionsEntry) []client.CacheOptionsEntry {
		if in == nil {
			return nil
		}
		out := make([]client.CacheOptionsEntry, len(in))
		for i, c := range in {
			out[i] = client.CacheOptionsEntry{Type: c.Type, Attrs: maps.Clone(c.Attrs)}
		}
		return out
	}
	return CacheEntries{Imports: clone(e.Imports), Exports: clone(e.Exports)}
}

// CacheMode is how much of the build an export keeps.
type CacheMode int

const (
	// CacheMax exports every intermediate step, so a later build reuses
	// the steps of every stage: mode=max. The default.
	CacheMax CacheMode = iota
	// CacheMin exports only the steps of the final result: mode=min.
	CacheMin
)

func (m CacheMode) String() string {
	switch m {
	case CacheMax:
		return "max"
	case CacheMin:
		return "min"
	}
	return fmt.Sprintf("CacheMode(%d)", int(m))
}

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

// CacheOption configures CacheFor and the direct constructors.
type CacheOption func(*cacheOptions) error

type cacheOptions struct {
	mode        CacheMode
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

// WithCacheMode sets how much an export keeps (default CacheMax).
func WithCacheMode(m CacheMode) CacheOption {
	return func(o *cacheOptions) error {
		if m != CacheMax && m != CacheMin {
			return fmt.Errorf("buildkit: WithCacheMode(%v): unknown mode", m)
		}
		o.mode = m
		return nil
	}
}

// WithIgnoreError lets the build succeed when exporting the cache fails
// (ignore-error=true). Default: a failed export fails the build.
func WithIgnoreError() CacheOption {
	return func(o *cacheOptions) error {
		o.ignoreError = true
		return nil
	}
}

// WithCacheName names the cache: the tag in index.json (type=local,
// default DefaultLocalTag), the tag of the cache image (type=registry,
// default DefaultRegistryTag) or the manifest name (type=s3, default
// DefaultS3Name; "a;b" imports from a and exports to both). Builds that
// should not share a cache use different names.
func WithCacheName(name string) CacheOption {
	return func(o *cacheOptions) error {
		if name == "" {
			return errors.New("buildkit: WithCacheName: empty name")
		}
		o.name = name
		return nil
	}
}

// WithImportOnly makes only an import: builds read the cache but never
// write it (for builds of untrusted branches, say). Default: both.
func WithImportOnly() CacheOption {
	return func(o *cacheOptions) error {
		o.importOnly = true
		return nil
	}
}

// WithExportOnly makes only an export: the build starts cold and writes
// the cache. Default: both.
func WithExportOnly() CacheOption {
	return func(o *cacheOptions) error {
		o.exportOnly = true
		return nil
	}
}

// WithCompression sets the compression of exported layers: "gzip" (the
// default), "zstd", "estargz" or "uncompressed". BuildKit's s3 cache always
// uses gzip and ignores it, so it is an error there.
func WithCompression(c string) CacheOption {
	return func(o *cacheOptions) error {
		switch c {
		case "gzip", "zstd", "estargz", "uncompressed":
			o.compression = c
			return nil
		}
		return fmt.Errorf("buildkit: WithCompression(%q): want gzip, zstd, estargz or uncompressed", c)
	}
}

// WithAttr sets any other attribute BuildKit's cache backends know
// ("compression-level", "force-compression", "image-manifest",
// "oci-mediatypes", "touch_refresh", "upload_parallelism", ...) on the
// import and the export. It overrides what the other options set.
func WithAttr(key, value string) CacheOption {
	return func(o *cacheOptions) error {
		if key == "" {
			return errors.New("buildkit: WithAttr: empty key")
		}
		if o.attrs == nil {
			o.attrs = map[string]string{}
		}
		o.attrs[key] = value
		return nil
	}
}

// WithRepository names the repository BuildKit's cache goes to for a
// *registry.LayerCache ("harbor.example.com/ci/cache"); by default it is
// the LayerCache's own (LayerCache.Repository).
func WithRepository(repo string) CacheOption {
	return func(o *cacheOptions) error {
		o.repository = repo
		return nil
	}
}

// WithInsecureRegistry lets BuildKit use plain HTTP to the cache's
// registry (registry.insecure=true). Default: the daemon's registry
// configuration decides.
func WithInsecureRegistry() CacheOption {
	return func(o *cacheOptions) error {
		o.insecure = true
		return nil
	}
}

// WithS3Region sets the bucket's region. Default: the *s3.Cache client's
// region; if it has none, the daemon's $AWS_REGION.
func WithS3Region(region string) CacheOption {
	return func(o *cacheOptions) error {
		o.region = region
		return nil
	}
}

// WithS3Endpoint sets the S3 endpoint as the daemon reaches it
// ("http://minio:9000") and whether it wants path-style requests (MinIO,
// Ceph and versitygw do). Default: the *s3.Cache client's BaseEndpoint and
// UsePathStyle; none means AWS.
func WithS3Endpoint(url string, pathStyle bool) CacheOption {
	return func(o *cacheOptions) error {
		if url == "" {
			return errors.New("buildkit: WithS3Endpoint: empty URL")
		}
		o.endpoint, o.pathStyle, o.endpointSet = url, pathStyle, true
		return nil
	}
}

// WithS3Credentials hands static credentials to the daemon in the cache
// attributes. Default: none; the daemon uses its own (its environment,
// shared config files or instance role), which is better: attributes
// travel in the solve request.
func WithS3Credentials(accessKeyID, secretAccessKey, sessionToken string) CacheOption {
	return func(o *cacheOptions) error {
		if accessKeyID == "" || secretAccessKey == "" {
			return errors.New("buildkit: WithS3Credentials: access key ID and secret are required")
		}
		o.creds = &[3]string{accessKeyID, secretAccessKey, sessionToken}
		return nil
	}
}

func makeCacheOptions(opts []CacheOption) (*cacheOptions, error) {
	o := &cacheOptions{}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.importOnly && o.exportOnly {
		return nil, errors.New("buildkit: either WithImportOnly or WithExportOnly, not both")
	}
	return o, nil
}

// entries makes one import and one export of type typ with attrs, plus
// the common attributes. Export-only attributes stay off the import.
func (o *cacheOptions) entries(typ string, importAttrs, exportAttrs map[string]string) CacheEntries {
	var e CacheEntries
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

func (o *cacheOptions) nameOr(def string) string {
	if o.name != "" {
		return o.name
	}
	return def
}

// CacheFor maps a cache to BuildKit cache entries over the same storage,
// so BuildKit and Go code share one cache and nothing is copied:
//
//   - *localfs.Store: type=local on the store's directory (an OCI image
//     layout: BuildKit's cache blobs land in blobs/sha256 beside ours and
//     its cache manifest is tagged in index.json, so localfs GC keeps it).
//   - *registry.LayerCache: type=registry on its repository (or the one
//     WithRepository names), plain HTTP when the LayerCache uses it, at a
//     tag other than the LayerCache's index tag. BuildKit's blobs go in
//     the same repository but are not in the LayerCache's index.
//   - *s3.Cache: type=s3 with the bucket, region, endpoint and the key
//     prefixes of the Cache, so BuildKit's blobs are at the Cache's BlobKey.
//
// Any other cache is ErrUnsupportedCache. CacheFor makes no request.
func CacheFor(c cache.LayerCache, opts ...CacheOption) (CacheEntries, error) {
	o, err := makeCacheOptions(opts)
	if err != nil {
		return CacheEntries{}, err
	}
	switch c := c.(type) {
	case *localfs.Store:
		if c == nil {
			break
		}
		if _, ok := o.attrs["reset"]; ok {
			return CacheEntries{}, errors.New("buildkit: CacheFor: reset is refused for a localfs store: BuildKit would delete every blob index.json does not reach, and the store keeps more than BuildKit's cache")
		}
		return localEntries(c.Dir(), o)
	case *registry.LayerCache:
		if c == nil {
			break
		}
		if o.repository == "" {
			o.repository = c.Repository()
		}
		if c.Insecure() {
			o.insecure = true
		}
		if o.nameOr(DefaultRegistryTag) == c.IndexTag() {
			return CacheEntries{}, fmt.Errorf("buildkit: CacheFor: cache name %q is the tag where the registry.LayerCache keeps its index; BuildKit would overwrite it", c.IndexTag())
		}
		return registryEntries(o.repository, o)
	case *s3.Cache:
		if c == nil {
			break
		}
		return s3Entries(c, o)
	}
	if c == nil {
		return CacheEntries{}, fmt.Errorf("buildkit: CacheFor: nil cache: %w", ErrUnsupportedCache)
	}
	return CacheEntries{}, fmt.Errorf("buildkit: CacheFor: %T: %w (want *localfs.Store, *registry.LayerCache or *s3.Cache)", c, ErrUnsupportedCache)
}

// LocalCache is a type=local cache in dir, an OCI image layout directory
// (localfs.Open makes one; BuildKit's client creates it otherwise). The
// directory is written by the BuildKit client, in this process.
func LocalCache(dir string, opts ...CacheOption) (CacheEntries, error) {
	o, err := makeCacheOptions(opts)
	if err != nil {
		return CacheEntries{}, err
	}
	if dir == "" {
		return CacheEntries{}, errors.New("buildkit: LocalCache: empty directory")
	}
	return localEntries(dir, o)
}

func localEntries(dir string, o *cacheOptions) (CacheEntries, error) {
	tag := o.nameOr(DefaultLocalTag)
	return o.entries("local",
		map[string]string{"src": dir, "tag": tag},
		map[string]string{"dest": dir, "tag": tag}), nil
}

// RegistryCache is a type=registry cache at ref ("registry.example.com/
// ci/cache:main"); without a tag, WithCacheName's (default
// DefaultRegistryTag).
func RegistryCache(ref string, opts ...CacheOption) (CacheEntries, error) {
	o, err := makeCacheOptions(opts)
	if err != nil {
		return CacheEntries{}, err
	}
	return registryEntries(ref, o)
}

func registryEntries(ref string, o *cacheOptions) (CacheEntries, error) {
	parsed, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return CacheEntries{}, fmt.Errorf("buildkit: registry cache %q: %w", ref, err)
	}
	if _, ok := parsed.(reference.Digested); ok {
		return CacheEntries{}, fmt.Errorf("buildkit: registry cache %q: a digest cannot be exported to; use a tag", ref)
	}
	if t, ok := parsed.(reference.Tagged); ok {
		if o.name != "" && o.name != t.Tag() {
			return CacheEntries{}, fmt.Errorf("buildkit: registry cache %q has tag %q and WithCacheName says %q", ref, t.Tag(), o.name)
		}
	} else {
		tag := o.nameOr(DefaultRegistryTag)
		if parsed, err = reference.WithTag(parsed, tag); err != nil {
			return CacheEntries{}, fmt.Errorf("buildkit: registry cache %q: tag %q: %w", ref, tag, err)
		}
		ref = strings.TrimSuffix(ref, "/") + ":" + tag
	}
	if parsed.(reference.Tagged).Tag() == registry.DefaultIndexTag {
		return CacheEntries{}, fmt.Errorf("buildkit: registry cache %q: tag %q is where registry.LayerCache keeps its index; BuildKit would overwrite it", ref, registry.DefaultIndexTag)
	}
	attrs := map[string]string{"ref": ref}
	if o.insecure {
		attrs["registry.insecure"] = "true"
	}
	return o.entries("registry", attrs, maps.Clone(attrs)), nil
}

// S3Cache is a type=s3 cache in bucket under prefix, laid out as BuildKit
// and the s3 package lay it out (<prefix>blobs/sha256:<hex>,
// <prefix>manifests/<name>). Set the region and, for other than AWS, the
// endpoint with WithS3Region and WithS3Endpoint.
func S3Cache(bucket, prefix string, opts ...CacheOption) (CacheEntries, error) {
	o, err := makeCacheOptions(opts)
	if err != nil {
		return CacheEntries{}, err
	}
	if bucket == "" {
		return CacheEntries{}, errors.New("buildkit: S3Cache: empty bucket name")
	}
	return s3Attrs(bucket, prefix, s3.DefaultBlobsPrefix, s3.DefaultManifestsPrefix, o)
}

// s3Entries reads the layout and the client settings off an *s3.Cache.
// The Cache tells its key prefixes only as whole keys (BlobKey,
// ManifestKey), so they are split back into prefix, blobs_prefix and
// manifests_prefix; BuildKit joins them the same way.
func s3Entries(c *s3.Cache, o *cacheOptions) (CacheEntries, error) {
	var cl *awss3.Client
	if c.As(&cl) && cl != nil {
		co := cl.Options()
		if o.region == "" {
			o.region = co.Region
		}
		if !o.endpointSet && co.BaseEndpoint != nil && *co.BaseEndpoint != "" {
			o.endpoint, o.pathStyle, o.endpointSet = *co.BaseEndpoint, co.UsePathStyle, true
		}
	}
	probe := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	blobs := strings.TrimSuffix(c.BlobKey(probe), probe.String())
	manifests := c.ManifestKey("")
	prefix, bp, mp := splitS3Prefixes(blobs, manifests)
	return s3Attrs(c.Bucket(), prefix, bp, mp, o)
}

// splitS3Prefixes splits the whole blob and manifest key prefixes into
// BuildKit's prefix, blobs_prefix and manifests_prefix: the defaults when
// they fit, else the common part up to a "/".
func splitS3Prefixes(blobs, manifests string) (prefix, bp, mp string) {
	if p, ok := strings.CutSuffix(blobs, s3.DefaultBlobsPrefix); ok {
		if q, ok := strings.CutSuffix(manifests, s3.DefaultManifestsPrefix); ok && p == q {
			return p, s3.DefaultBlobsPrefix, s3.DefaultManifestsPrefix
		}
	}
	n := 0
	for n < len(blobs) && n < len(manifests) && blobs[n] == manifests[n] {
		n++
	}
	n = strings.LastIndexByte(blobs[:n], '/') + 1
	return blobs[:n], blobs[n:], manifests[n:]
}

func s3Attrs(bucket, prefix, blobsPrefix, manifestsPrefix string, o *cacheOptions) (CacheEntries, error) {
	if o.compression != "" {
		return CacheEntries{}, errors.New("buildkit: s3 cache: BuildKit's s3 cache always compresses with gzip; WithCompression does not apply")
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
