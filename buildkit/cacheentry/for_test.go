package cacheentry

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/client"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/ocirepo"
	"github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// The backends have the capabilities For looks for: a renamed method
// would otherwise turn into ErrUnsupportedCache.
var (
	_ LayoutDir          = (*localfs.Store)(nil)
	_ RegistryRepository = (*ocirepo.Cache)(nil)
	_ S3Located          = (*s3.Cache)(nil)
	_ cache.Tiered       = (*tier.Cache)(nil)
)

// TestDefaultIndexTag: Registry refuses the tag where the repository
// LayerCache keeps its index by default; the constant is declared here so
// that the package does not link the registry client, and must agree.
func TestDefaultIndexTag(t *testing.T) {
	if defaultIndexTag != ocirepo.DefaultIndexTag {
		t.Errorf("defaultIndexTag = %q, the repository LayerCache's default is %q", defaultIndexTag, ocirepo.DefaultIndexTag)
	}
}

type attrs = map[string]string

func entry(typ string, a attrs) []client.CacheOptionsEntry {
	return []client.CacheOptionsEntry{{Type: typ, Attrs: a}}
}

func newS3Cache(t *testing.T, o awss3.Options, prefix string, opts ...s3.Option) *s3.Cache {
	t.Helper()
	c, err := s3.New(awss3.New(o), "ci-cache", prefix, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newStore(t *testing.T) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestFor(t *testing.T) {
	store := newStore(t)
	dir := store.Dir()
	lc, err := ocirepo.New("harbor.example.com/ci/cache")
	if err != nil {
		t.Fatal(err)
	}
	loopbackLC, err := ocirepo.New("127.0.0.1:5000/cache")
	if err != nil {
		t.Fatal(err)
	}
	singleLabelLC, err := ocirepo.NewAt("harbor", "team/cache")
	if err != nil {
		t.Fatal(err)
	}
	minio := awss3.Options{Region: "eu-west-1", BaseEndpoint: aws.String("http://127.0.0.1:9000"), UsePathStyle: true}
	aws := awss3.Options{Region: "us-east-2"}
	tests := []struct {
		name  string
		cache cache.LayerCache
		opts  []Option
		want  Entries
	}{
		{
			name:  "localfs",
			cache: store,
			want: Entries{
				Imports: entry("local", attrs{"src": dir, "tag": "latest"}),
				Exports: entry("local", attrs{"dest": dir, "tag": "latest", "mode": "max"}),
			},
		},
		{
			name:  "localfs, min, named, ignore errors, zstd",
			cache: store,
			opts:  []Option{WithMode(ModeMin), WithName("app-main"), WithIgnoreError(), WithCompression("zstd")},
			want: Entries{
				Imports: entry("local", attrs{"src": dir, "tag": "app-main"}),
				Exports: entry("local", attrs{"dest": dir, "tag": "app-main", "mode": "min", "ignore-error": "true", "compression": "zstd"}),
			},
		},
		{
			name:  "localfs, import only",
			cache: store,
			opts:  []Option{WithImportOnly()},
			want:  Entries{Imports: entry("local", attrs{"src": dir, "tag": "latest"})},
		},
		{
			name:  "localfs, export only, extra attrs",
			cache: store,
			opts:  []Option{WithExportOnly(), WithAttr("oci-mediatypes", "false"), WithAttr("mode", "min")},
			want:  Entries{Exports: entry("local", attrs{"dest": dir, "tag": "latest", "mode": "min", "oci-mediatypes": "false"})},
		},
		{
			name:  "registry layer cache: its own repository",
			cache: lc,
			want: Entries{
				Imports: entry("registry", attrs{"ref": "harbor.example.com/ci/cache:buildcache"}),
				Exports: entry("registry", attrs{"ref": "harbor.example.com/ci/cache:buildcache", "mode": "max"}),
			},
		},
		{
			// BuildKit reads "harbor/team/cache" as Docker Hub's; the
			// default port keeps the registry the cache talks to.
			name:  "registry layer cache on a single-label host",
			cache: singleLabelLC,
			want: Entries{
				Imports: entry("registry", attrs{"ref": "harbor:443/team/cache:buildcache"}),
				Exports: entry("registry", attrs{"ref": "harbor:443/team/cache:buildcache", "mode": "max"}),
			},
		},
		{
			name:  "registry layer cache on loopback: plain HTTP",
			cache: loopbackLC,
			want: Entries{
				Imports: entry("registry", attrs{"ref": "127.0.0.1:5000/cache:buildcache", "registry.insecure": "true"}),
				Exports: entry("registry", attrs{"ref": "127.0.0.1:5000/cache:buildcache", "registry.insecure": "true", "mode": "max"}),
			},
		},
		{
			name:  "registry layer cache, insecure, named",
			cache: lc,
			opts:  []Option{WithRepository("localhost:5000/cache"), WithInsecureRegistry(), WithName("main"), WithIgnoreError()},
			want: Entries{
				Imports: entry("registry", attrs{"ref": "localhost:5000/cache:main", "registry.insecure": "true"}),
				Exports: entry("registry", attrs{"ref": "localhost:5000/cache:main", "registry.insecure": "true", "mode": "max", "ignore-error": "true"}),
			},
		},
		{
			name:  "s3 on MinIO with a prefix",
			cache: newS3Cache(t, minio, "ci/"),
			want: Entries{
				Imports: entry("s3", attrs{"bucket": "ci-cache", "region": "eu-west-1", "prefix": "ci/", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/",
					"name": "buildkit", "endpoint_url": "http://127.0.0.1:9000", "use_path_style": "true"}),
				Exports: entry("s3", attrs{"bucket": "ci-cache", "region": "eu-west-1", "prefix": "ci/", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/",
					"name": "buildkit", "endpoint_url": "http://127.0.0.1:9000", "use_path_style": "true", "mode": "max"}),
			},
		},
		{
			name:  "s3 on AWS, own prefixes, daemon's endpoint and credentials",
			cache: newS3Cache(t, aws, "team/app/", s3.WithBlobsPrefix("b/"), s3.WithManifestsPrefix("m/")),
			opts: []Option{WithS3Endpoint("http://minio:9000", true), WithS3Region("us-west-1"), WithName("app;shared"),
				WithS3Credentials("AKID", "SECRET", ""), WithImportOnly()},
			want: Entries{
				Imports: entry("s3", attrs{"bucket": "ci-cache", "region": "us-west-1", "prefix": "team/app/", "blobs_prefix": "b/", "manifests_prefix": "m/",
					"name": "app;shared", "endpoint_url": "http://minio:9000", "use_path_style": "true", "access_key_id": "AKID", "secret_access_key": "SECRET"}),
			},
		},
		{
			name:  "s3 without region or endpoint leaves them to the daemon",
			cache: newS3Cache(t, awss3.Options{}, ""),
			opts:  []Option{WithExportOnly(), WithS3Credentials("AKID", "SECRET", "TOKEN")},
			want: Entries{
				Exports: entry("s3", attrs{"bucket": "ci-cache", "prefix": "", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/", "name": "buildkit",
					"access_key_id": "AKID", "secret_access_key": "SECRET", "session_token": "TOKEN", "mode": "max"}),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := For(tt.cache, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("For (-want +got):\n%s", diff)
			}
		})
	}
}

// TestForTier checks that For sees through a tier: the near
// tier's directory for a local entry, the far tier for the shared one,
// imported and exported in that order.
func TestForTier(t *testing.T) {
	store := newStore(t)
	dir := store.Dir()
	s3c := newS3Cache(t, awss3.Options{Region: "eu-west-1"}, "ci/")
	lc, err := ocirepo.New("harbor.example.com/ci/cache")
	if err != nil {
		t.Fatal(err)
	}
	mem, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	newTier := func(near, far cache.LayerCache) *tier.Cache {
		c, err := tier.New(near, far)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	local := Entries{
		Imports: entry("local", attrs{"src": dir, "tag": "latest"}),
		Exports: entry("local", attrs{"dest": dir, "tag": "latest", "mode": "max"}),
	}
	s3a := attrs{"bucket": "ci-cache", "region": "eu-west-1", "prefix": "ci/", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/", "name": "buildkit"}
	s3e := Entries{Imports: entry("s3", s3a), Exports: entry("s3", attrs{"mode": "max"})}
	for k, v := range s3a {
		s3e.Exports[0].Attrs[k] = v
	}
	reg := Entries{
		Imports: entry("registry", attrs{"ref": "harbor.example.com/ci/cache:buildcache"}),
		Exports: entry("registry", attrs{"ref": "harbor.example.com/ci/cache:buildcache", "mode": "max"}),
	}
	for _, tt := range []struct {
		name  string
		cache cache.LayerCache
		want  Entries
	}{
		{"localfs+s3", newTier(store, s3c), local.Append(s3e)},
		{"localfs+registry", newTier(store, lc), local.Append(reg)},
		{"memory+s3: the far tier alone", newTier(mem, s3c), s3e},
		{"localfs+memory: the near tier alone", newTier(store, mem), local},
		{"a tier of tiers", newTier(newTier(store, mem), s3c), local.Append(s3e)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := For(tt.cache)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("For (-want +got):\n%s", diff)
			}
		})
	}

	if _, err := For(newTier(mem, mem)); !errors.Is(err, ErrUnsupportedCache) {
		t.Errorf("For(memory+memory) = %v, want ErrUnsupportedCache", err)
	}
	// An option that one tier refuses fails the whole tier.
	if _, err := For(newTier(store, s3c), WithCompression("zstd")); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("For(localfs+s3, zstd) = %v, want the s3 tier's refusal", err)
	}
}

// unwrapper wraps a cache and says so (cache.Unwrapper), as an
// instrumenting or read-only wrapper would.
type unwrapper struct{ cache.LayerCache }

func (u unwrapper) Unwrap() cache.LayerCache { return u.LayerCache }

// TestForLooksThroughWrappers: a wrapper that unwraps to a cache maps as
// the cache does, a tier included (cache.As finds the capabilities).
func TestForLooksThroughWrappers(t *testing.T) {
	store := newStore(t)
	s3c := newS3Cache(t, awss3.Options{Region: "eu-west-1"}, "ci/")
	lc, err := ocirepo.New("harbor.example.com/ci/cache")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tier.New(store, s3c)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]cache.LayerCache{"localfs": store, "s3": s3c, "registry": lc, "tier": tr} {
		t.Run(name, func(t *testing.T) {
			want, err := For(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := For(unwrapper{unwrapper{c}})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("For(wrapped) (-For(cache) +got):\n%s", diff)
			}
		})
	}
}

// TestS3KeysAgree checks that BuildKit, reading the attributes For
// gives it, puts blobs and manifests exactly where the s3 package does:
// BuildKit's s3 cache keys a blob prefix + blobs_prefix + "sha256:<hex>"
// and a manifest prefix + manifests_prefix + name
// (cache/remotecache/s3: blobKey, manifestKey).
func TestS3KeysAgree(t *testing.T) {
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("3f", 32)}
	for _, tc := range []struct {
		prefix string
		opts   []s3.Option
	}{
		{prefix: ""},
		{prefix: "ci/"},
		{prefix: "ci-"},
		{prefix: "a/b/", opts: []s3.Option{s3.WithBlobsPrefix("blobs-v2/")}},
		{prefix: "x/", opts: []s3.Option{s3.WithBlobsPrefix("shared/b/"), s3.WithManifestsPrefix("shared/m/")}},
		{prefix: "p", opts: []s3.Option{s3.WithBlobsPrefix(""), s3.WithManifestsPrefix("")}},
	} {
		c := newS3Cache(t, awss3.Options{Region: "us-east-1"}, tc.prefix, tc.opts...)
		e, err := For(c, WithName("main"))
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range append(e.Imports, e.Exports...) {
			a := en.Attrs
			if got, want := a["prefix"]+a["blobs_prefix"]+d.String(), c.BlobKey(d); got != want {
				t.Errorf("prefix %q: BuildKit's blob key %q, the s3 package's %q", tc.prefix, got, want)
			}
			if got, want := a["prefix"]+a["manifests_prefix"]+a["name"], c.ManifestKey("main"); got != want {
				t.Errorf("prefix %q: BuildKit's manifest key %q, the s3 package's %q", tc.prefix, got, want)
			}
		}
	}
	// The common layout splits back into BuildKit's own attributes.
	e, _ := For(newS3Cache(t, awss3.Options{}, "ci/"))
	if a := e.Imports[0].Attrs; a["prefix"] != "ci/" || a["blobs_prefix"] != "blobs/" || a["manifests_prefix"] != "manifests/" {
		t.Errorf("attrs %v, want prefix ci/ with BuildKit's default sub-prefixes", a)
	}
}

func TestDirectConstructors(t *testing.T) {
	got, err := Local("/var/cache/bk", WithName("x"))
	if err != nil {
		t.Fatal(err)
	}
	want := Entries{
		Imports: entry("local", attrs{"src": "/var/cache/bk", "tag": "x"}),
		Exports: entry("local", attrs{"dest": "/var/cache/bk", "tag": "x", "mode": "max"}),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Local (-want +got):\n%s", diff)
	}

	for ref, wantRef := range map[string]string{
		"ghcr.io/acme/cache":          "ghcr.io/acme/cache:buildcache",
		"ghcr.io/acme/cache:main":     "ghcr.io/acme/cache:main",
		"localhost:5000/cache":        "localhost:5000/cache:buildcache",
		"localhost:5000/cache:pr-123": "localhost:5000/cache:pr-123",
	} {
		got, err := Registry(ref)
		if err != nil {
			t.Fatalf("Registry(%q): %v", ref, err)
		}
		if got.Imports[0].Attrs["ref"] != wantRef || got.Exports[0].Attrs["ref"] != wantRef || got.Exports[0].Attrs["mode"] != "max" {
			t.Errorf("Registry(%q) = %+v, want ref %q", ref, got, wantRef)
		}
	}

	got, err = S3("bucket", "ci/", WithS3Region("eu-central-1"), WithS3Endpoint("https://s3.example.com", false))
	if err != nil {
		t.Fatal(err)
	}
	wantS3 := attrs{"bucket": "bucket", "region": "eu-central-1", "prefix": "ci/", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/",
		"name": "buildkit", "endpoint_url": "https://s3.example.com", "use_path_style": "false"}
	if diff := cmp.Diff(wantS3, got.Imports[0].Attrs); diff != "" {
		t.Errorf("S3 import (-want +got):\n%s", diff)
	}
}

func TestErrors(t *testing.T) {
	store := newStore(t)
	lc, _ := ocirepo.New("localhost:5000/cache")
	mem, _ := memory.NewLayerCache(memory.WithLayerCacheMaxBytes(1 << 20))
	s3c := newS3Cache(t, awss3.Options{Region: "us-east-1"}, "")
	var nilStore *struct{ cache.LayerCache }
	for name, tc := range map[string]struct {
		run    func() (Entries, error)
		is     error
		substr string
	}{
		"memory cache":            {func() (Entries, error) { return For(mem) }, ErrUnsupportedCache, "*memory.LayerCache"},
		"wrapped cache":           {func() (Entries, error) { return For(struct{ cache.LayerCache }{store}) }, ErrUnsupportedCache, "struct"},
		"nil":                     {func() (Entries, error) { return For(nil) }, ErrUnsupportedCache, "nil cache"},
		"nil pointer":             {func() (Entries, error) { return For(nilStore) }, ErrUnsupportedCache, ""},
		"nil *localfs.Store":      {func() (Entries, error) { return For((*localfs.Store)(nil)) }, ErrUnsupportedCache, "nil cache"},
		"layer cache's index tag": {func() (Entries, error) { return For(lc, WithName(lc.IndexTag())) }, nil, "keeps its index"},
		"reset on localfs":        {func() (Entries, error) { return For(store, WithAttr("reset", "true")) }, nil, "reset is refused"},
		"both only":               {func() (Entries, error) { return For(store, WithImportOnly(), WithExportOnly()) }, nil, "not both"},
		"bad mode":                {func() (Entries, error) { return For(store, WithMode(9)) }, nil, "unknown mode"},
		"bad compression":         {func() (Entries, error) { return For(store, WithCompression("lz4")) }, nil, "lz4"},
		"compression on s3":       {func() (Entries, error) { return For(s3c, WithCompression("zstd")) }, nil, "always compresses with gzip"},
		"empty name":              {func() (Entries, error) { return For(store, WithName("")) }, nil, "empty name"},
		"registry index tag": {func() (Entries, error) {
			return For(lc, WithRepository("localhost:5000/cache"), WithName(defaultIndexTag))
		}, nil, "BuildKit would overwrite it"},
		"registry digest": {func() (Entries, error) {
			return Registry("localhost:5000/c@sha256:" + strings.Repeat("1", 64))
		}, nil, "use a tag"},
		"registry at the index tag": {func() (Entries, error) {
			return Registry("localhost:5000/cache:" + defaultIndexTag)
		}, nil, "keeps its index"},
		"registry two tags": {func() (Entries, error) { return Registry("localhost:5000/c:a", WithName("b")) }, nil, `has tag "a"`},
		"registry bad ref":  {func() (Entries, error) { return Registry("acme/Cache") }, nil, "acme/Cache"},
		"s3 no bucket":      {func() (Entries, error) { return S3("", "") }, nil, "empty bucket"},
		"s3 half creds":     {func() (Entries, error) { return S3("b", "", WithS3Credentials("AKID", "", "")) }, nil, "required"},
		"local no dir":      {func() (Entries, error) { return Local("") }, nil, "empty directory"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := tc.run()
			if err == nil {
				t.Fatalf("= %+v, want an error", got)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("error %q does not say %q", err, tc.substr)
			}
		})
	}
}

func TestCloneAndAppend(t *testing.T) {
	local, _ := Local("/l")
	remote, _ := Registry("localhost:5000/c")
	both := local.Append(remote)
	if len(both.Imports) != 2 || len(both.Exports) != 2 || both.Imports[0].Type != "local" || both.Imports[1].Type != "registry" {
		t.Fatalf("Append = %+v", both)
	}
	// BuildKit's client writes the digest into a local import's attrs;
	// neither the clone nor the sources may see it.
	both.Imports[0].Attrs["digest"] = "sha256:..."
	if _, ok := local.Imports[0].Attrs["digest"]; ok {
		t.Error("Append shares attribute maps with its receiver")
	}
	c := local.Clone()
	c.Imports[0].Attrs["digest"] = "x"
	if _, ok := local.Imports[0].Attrs["digest"]; ok {
		t.Error("Clone shares attribute maps")
	}
}
