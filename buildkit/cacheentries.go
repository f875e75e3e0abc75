package buildkit

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/client"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/ocirepo"
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
// *ocirepo.Cache ("harbor.example.com/ci/cache"); by default it is
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

// The capabilities CacheFor looks for, declared here where they are used:
// a cache need not be one of this module's types to have a BuildKit
// counterpart, only to say where its bytes are.
type (
	// layoutDir is a cache kept in an OCI image layout directory
	// (*localfs.Store).
	layoutDir interface{ Dir() string }
	// registryRepo is a cache in a registry repository
	// (*ocirepo.Cache), which keeps its own index at IndexTag.
	registryRepo interface {
		Repository() string
		Insecure() bool
		IndexTag() string
	}
	// s3Located is a cache in an S3 bucket (*s3.Cache).
	s3Located interface{ Location() s3.Location }
)

// CacheFor maps a cache to BuildKit cache entries over the same storage,
// so BuildKit and Go code share one cache and nothing is copied. It goes
// by what the cache can tell (the methods named below), not by its type:
//
//   - Dir() (*localfs.Store): type=local on the directory (an OCI image
//     layout: BuildKit's cache blobs land in blobs/sha256 beside ours and
//     its cache manifest is tagged in index.json, so localfs GC keeps it).
//   - Repository(), Insecure() and IndexTag() (*ocirepo.Cache):
//     type=registry on the repository (or the one WithRepository names),
//     plain HTTP when the cache uses it, at a tag other than its index
//     tag. BuildKit's blobs go in the same repository but are not in the
//     LayerCache's index.
//   - Location() (*s3.Cache): type=s3 with the bucket, region, endpoint
//     and key prefixes of the Cache, so BuildKit's blobs are at the
//     Cache's BlobKey.
//   - cache.Tiered (*tier.Cache): the near tier's entries followed by
//     the far tier's. BuildKit imports from every import and exports to
//     every export, so a build reads the local directory first, then the
//     shared bucket or repository, and writes both, as the tier does. A
//     tier with a BuildKit counterpart on one side only (a memory near
//     tier, say) gives that side's entries.
//
// Any other cache is ErrUnsupportedCache. CacheFor makes no request.
func CacheFor(c cache.LayerCache, opts ...CacheOption) (CacheEntries, error) {
	o, err := makeCacheOptions(opts)
	if err != nil {
		return CacheEntries{}, err
	}
	if isNil(c) {
		return CacheEntries{}, fmt.Errorf("buildkit: CacheFor: nil cache: %w", ErrUnsupportedCache)
	}
	return cacheFor(c, o)
}

func cacheFor(c cache.LayerCache, o *cacheOptions) (CacheEntries, error) {
	// A tier is looked at first: it may have any of the others' methods
	// some day, but what BuildKit should use is its tiers'.
	if t, ok := c.(cache.Tiered); ok {
		return tierEntries(t, o)
	}
	if l, ok := c.(s3Located); ok {
		return s3Entries(l.Location(), o)
	}
	if r, ok := c.(registryRepo); ok {
		oo := *o // WithRepository and the insecure default are per cache
		if oo.repository == "" {
			oo.repository = r.Repository()
		}
		if r.Insecure() {
			oo.insecure = true
		}
		if oo.nameOr(DefaultRegistryTag) == r.IndexTag() {
			return CacheEntries{}, fmt.Errorf("buildkit: CacheFor: cache name %q is the tag where the ocirepo.Cache keeps its index; BuildKit would overwrite it", r.IndexTag())
		}
		return registryEntries(oo.repository, &oo)
	}
	if d, ok := c.(layoutDir); ok {
		if _, ok := o.attrs["reset"]; ok {
			return CacheEntries{}, errors.New("buildkit: CacheFor: reset is refused for a localfs store: BuildKit would delete every blob index.json does not reach, and the store keeps more than BuildKit's cache")
		}
		return localEntries(d.Dir(), o)
	}
	return CacheEntries{}, fmt.Errorf("buildkit: CacheFor: %T: %w (want a cache with Dir, Repository or Location: *localfs.Store, *ocirepo.Cache, *s3.Cache, or a *tier.Cache of them)", c, ErrUnsupportedCache)
}

// tierEntries is the near tier's entries, then the far tier's. A tier
// BuildKit has no counterpart for is left out; if neither has one, the
// tier has none.
func tierEntries(t cache.Tiered, o *cacheOptions) (CacheEntries, error) {
	var out CacheEntries
	found := false
	for _, c := range []cache.LayerCache{t.Near(), t.Far()} {
		if isNil(c) {
			continue
		}
		e, err := cacheFor(c, o)
		if errors.Is(err, ErrUnsupportedCache) {
			continue
		}
		if err != nil {
			return CacheEntries{}, err
		}
		out, found = out.Append(e), true
	}
	if !found {
		return CacheEntries{}, fmt.Errorf("buildkit: CacheFor: %T: %w: neither tier (%T, %T) has a BuildKit cache backend", t, ErrUnsupportedCache, t.Near(), t.Far())
	}
	return out, nil
}

// isNil reports whether c is nil or a nil pointer in an interface: a
// typed nil has the methods but nothing behind them.
func isNil(c any) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	return v.Kind() == reflect.Pointer && v.IsNil()
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
	if parsed.(reference.Tagged).Tag() == ocirepo.DefaultIndexTag {
		return CacheEntries{}, fmt.Errorf("buildkit: registry cache %q: tag %q is where ocirepo.Cache keeps its index; BuildKit would overwrite it", ref, ocirepo.DefaultIndexTag)
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

// s3Entries takes the layout and the client settings of an s3 cache; the
// options override the region and the endpoint.
func s3Entries(l s3.Location, o *cacheOptions) (CacheEntries, error) {
	oo := *o
	if oo.region == "" {
		oo.region = l.Region
	}
	if !oo.endpointSet && l.Endpoint != "" {
		oo.endpoint, oo.pathStyle, oo.endpointSet = l.Endpoint, l.PathStyle, true
	}
	return s3Attrs(l.Bucket, l.Prefix, l.BlobsPrefix, l.ManifestsPrefix, &oo)
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
