package buildkit

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

// The backends have the methods CacheFor and PinBaseImages look for: a
// renamed method would otherwise turn into ErrUnsupportedCache.
var (
	_ layoutDir    = (*localfs.Store)(nil)
	_ LayoutStore  = (*localfs.Store)(nil)
	_ registryRepo = (*ocirepo.Cache)(nil)
	_ s3Located    = (*s3.Cache)(nil)
	_ cache.Tiered = (*tier.Cache)(nil)
)

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

func TestCacheFor(t *testing.T) {
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
		opts  []CacheOption
		want  CacheEntries
	}{
		{
			name:  "localfs",
			cache: store,
			want: CacheEntries{
				Imports: entry("local", attrs{"src": dir, "tag": "latest"}),
				Exports: entry("local", attrs{"dest": dir, "tag": "latest", "mode": "max"}),
			},
		},
		{
			name:  "localfs, min, named, ignore errors, zstd",
			cache: store,
			opts:  []CacheOption{WithCacheMode(CacheMin), WithCacheName("app-main"), WithIgnoreError(), WithCompression("zstd")},
			want: CacheEntries{
				Imports: entry("local", attrs{"src": dir, "tag": "app-main"}),
				Exports: entry("local", attrs{"dest": dir, "tag": "app-main", "mode": "min", "ignore-error": "true", "compression": "zstd"}),
			},
		},
		{
			name:  "localfs, import only",
			cache: store,
			opts:  []CacheOption{WithImportOnly()},
			want:  CacheEntries{Imports: entry("local", attrs{"src": dir, "tag": "latest"})},
		},
		{
			name:  "localfs, export only, extra attrs",
			cache: store,
			opts:  []CacheOption{WithExportOnly(), WithAttr("oci-mediatypes", "false"), WithAttr("mode", "min")},
			want:  CacheEntries{Exports: entry("local", attrs{"dest": dir, "tag": "latest", "mode": "min", "oci-mediatypes": "false"})},
		},
		{
			name:  "registry layer cache: its own repository",
			cache: lc,
			want: CacheEntries{
				Imports: entry("registry", attrs{"ref": "harbor.example.com/ci/cache:buildcache"}),
				Exports: entry("registry", attrs{"ref": "harbor.example.com/ci/cache:buildcache", "mode": "max"}),
			},
		},
		{
			// BuildKit reads "harbor/team/cache" as Docker Hub's; the
			// default port keeps the registry the cache talks to.
			name:  "registry layer cache on a single-label host",
			cache: singleLabelLC,
			want: CacheEntries{
				Imports: entry("registry", attrs{"ref": "harbor:443/team/cache:buildcache"}),
				Exports: entry("registry", attrs{"ref": "harbor:443/team/cache:buildcache", "mode": "max"}),
			},
		},
		{
			name:  "registry layer cache on loopback: plain HTTP",
			cache: loopbackLC,
			want: CacheEntries{
				Imports: entry("registry", attrs{"ref": "127.0.0.1:5000/cache:buildcache", "registry.insecure": "true"}),
				Exports: entry("registry", attrs{"ref": "127.0.0.1:5000/cache:buildcache", "registry.insecure": "true", "mode": "max"}),
			},
		},
		{
			name:  "registry layer cache, insecure, named",
			cache: lc,
			opts:  []CacheOption{WithRepository("localhost:5000/cache"), WithInsecureRegistry(), WithCacheName("main"), WithIgnoreError()},
			want: CacheEntries{
				Imports: entry("registry", attrs{"ref": "localhost:5000/cache:main", "registry.insecure": "true"}),
				Exports: entry("registry", attrs{"ref": "localhost:5000/cache:main", "registry.insecure": "true", "mode": "max", "ignore-error": "true"}),
			},
		},
		{
			name:  "s3 on MinIO with a prefix",
			cache: newS3Cache(t, minio, "ci/"),
			want: CacheEntries{
				Imports: entry("s3", attrs{"bucket": "ci-cache", "region": "eu-west-1", "prefix": "ci/", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/",
					"name": "buildkit", "endpoint_url": "http://127.0.0.1:9000", "use_path_style": "true"}),
				Exports: entry("s3", attrs{"bucket": "ci-cache", "region": "eu-west-1", "prefix": "ci/", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/",
					"name": "buildkit", "endpoint_url": "http://127.0.0.1:9000", "use_path_style": "true", "mode": "max"}),
			},
		},
		{
			name:  "s3 on AWS, own prefixes, daemon's endpoint and credentials",
			cache: newS3Cache(t, aws, "team/app/", s3.WithBlobsPrefix("b/"), s3.WithManifestsPrefix("m/")),
			opts: []CacheOption{WithS3Endpoint("http://minio:9000", true), WithS3Region("us-west-1"), WithCacheName("app;shared"),
				WithS3Credentials("AKID", "SECRET", ""), WithImportOnly()},
			want: CacheEntries{
				Imports: entry("s3", attrs{"bucket": "ci-cache", "region": "us-west-1", "prefix": "team/app/", "blobs_prefix": "b/", "manifests_prefix": "m/",
					"name": "app;shared", "endpoint_url": "http://minio:9000", "use_path_style": "true", "access_key_id": "AKID", "secret_access_key": "SECRET"}),
			},
		},
		{
			name:  "s3 without region or endpoint leaves them to the daemon",
			cache: newS3Cache(t, awss3.Options{}, ""),
			opts:  []CacheOption{WithExportOnly(), WithS3Credentials("AKID", "SECRET", "TOKEN")},
			want: CacheEntries{
				Exports: entry("s3", attrs{"bucket": "ci-cache", "prefix": "", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/", "name": "buildkit",
					"access_key_id": "AKID", "secret_access_key": "SECRET", "session_token": "TOKEN", "mode": "max"}),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CacheFor(tt.cache, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CacheFor (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCacheForTier checks that CacheFor sees through a tier: the near
// tier's directory for a local entry, the far tier for the shared one,
// imported and exported in that order.
func TestCacheForTier(t *testing.T) {
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
	local := CacheEntries{
		Imports: entry("local", attrs{"src": dir, "tag": "latest"}),
		Exports: entry("local", attrs{"dest": dir, "tag": "latest", "mode": "max"}),
	}
	s3a := attrs{"bucket": "ci-cache", "region": "eu-west-1", "prefix": "ci/", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/", "name": "buildkit"}
	s3e := CacheEntries{Imports: entry("s3", s3a), Exports: entry("s3", attrs{"mode": "max"})}
	for k, v := range s3a {
		s3e.Exports[0].Attrs[k] = v
	}
	reg := CacheEntries{
		Imports: entry("registry", attrs{"ref": "harbor.example.com/ci/cache:buildcache"}),
		Exports: entry("registry", attrs{"ref": "harbor.example.com/ci/cache:buildcache", "mode": "max"}),
	}
	for _, tt := range []struct {
		name  string
		cache cache.LayerCache
		want  CacheEntries
	}{
		{"localfs+s3", newTier(store, s3c), local.Append(s3e)},
		{"localfs+registry", newTier(store, lc), local.Append(reg)},
		{"memory+s3: the far tier alone", newTier(mem, s3c), s3e},
		{"localfs+memory: the near tier alone", newTier(store, mem), local},
		{"a tier of tiers", newTier(newTier(store, mem), s3c), local.Append(s3e)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CacheFor(tt.cache)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CacheFor (-want +got):\n%s", diff)
			}
		})
	}

	if _, err := CacheFor(newTier(mem, mem)); !errors.Is(err, ErrUnsupportedCache) {
		t.Errorf("CacheFor(memory+memory) = %v, want ErrUnsupportedCache", err)
	}
	// An option that one tier refuses fails the whole tier.
	if _, err := CacheFor(newTier(store, s3c), WithCompression("zstd")); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("CacheFor(localfs+s3, zstd) = %v, want the s3 tier's refusal", err)
	}
}

// TestS3KeysAgree checks that BuildKit, reading the attributes CacheFor
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
		e, err := CacheFor(c, WithCacheName("main"))
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
	e, _ := CacheFor(newS3Cache(t, awss3.Options{}, "ci/"))
	if a := e.Imports[0].Attrs; a["prefix"] != "ci/" || a["blobs_prefix"] != "blobs/" || a["manifests_prefix"] != "manifests/" {
		t.Errorf("attrs %v, want prefix ci/ with BuildKit's default sub-prefixes", a)
	}
}

func TestCacheDirectConstructors(t *testing.T) {
	got, err := LocalCache("/var/cache/bk", WithCacheName("x"))
	if err != nil {
		t.Fatal(err)
	}
	want := CacheEntries{
		Imports: entry("local", attrs{"src": "/var/cache/bk", "tag": "x"}),
		Exports: entry("local", attrs{"dest": "/var/cache/bk", "tag": "x", "mode": "max"}),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LocalCache (-want +got):\n%s", diff)
	}

	for ref, wantRef := range map[string]string{
		"ghcr.io/acme/cache":          "ghcr.io/acme/cache:buildcache",
		"ghcr.io/acme/cache:main":     "ghcr.io/acme/cache:main",
		"localhost:5000/cache":        "localhost:5000/cache:buildcache",
		"localhost:5000/cache:pr-123": "localhost:5000/cache:pr-123",
	} {
		got, err := RegistryCache(ref)
		if err != nil {
			t.Fatalf("RegistryCache(%q): %v", ref, err)
		}
		if got.Imports[0].Attrs["ref"] != wantRef || got.Exports[0].Attrs["ref"] != wantRef || got.Exports[0].Attrs["mode"] != "max" {
			t.Errorf("RegistryCache(%q) = %+v, want ref %q", ref, got, wantRef)
		}
	}

	got, err = S3Cache("bucket", "ci/", WithS3Region("eu-central-1"), WithS3Endpoint("https://s3.example.com", false))
	if err != nil {
		t.Fatal(err)
	}
	wantS3 := attrs{"bucket": "bucket", "region": "eu-central-1", "prefix": "ci/", "blobs_prefix": "blobs/", "manifests_prefix": "manifests/",
		"name": "buildkit", "endpoint_url": "https://s3.example.com", "use_path_style": "false"}
	if diff := cmp.Diff(wantS3, got.Imports[0].Attrs); diff != "" {
		t.Errorf("S3Cache import (-want +got):\n%s", diff)
	}
}

func TestCacheEntriesErrors(t *testing.T) {
	store := newStore(t)
	lc, _ := ocirepo.New("localhost:5000/cache")
	mem, _ := memory.NewLayerCache(memory.WithLayerCacheMaxBytes(1 << 20))
	s3c := newS3Cache(t, awss3.Options{Region: "us-east-1"}, "")
	var nilStore *struct{ cache.LayerCache }
	for name, tc := range map[string]struct {
		run    func() (CacheEntries, error)
		is     error
		substr string
	}{
		"memory cache":            {func() (CacheEntries, error) { return CacheFor(mem) }, ErrUnsupportedCache, "*memory.LayerCache"},
		"wrapped cache":           {func() (CacheEntries, error) { return CacheFor(struct{ cache.LayerCache }{store}) }, ErrUnsupportedCache, "struct"},
		"nil":                     {func() (CacheEntries, error) { return CacheFor(nil) }, ErrUnsupportedCache, "nil cache"},
		"nil pointer":             {func() (CacheEntries, error) { return CacheFor(nilStore) }, ErrUnsupportedCache, ""},
		"nil *localfs.Store":      {func() (CacheEntries, error) { return CacheFor((*localfs.Store)(nil)) }, ErrUnsupportedCache, "nil cache"},
		"layer cache's index tag": {func() (CacheEntries, error) { return CacheFor(lc, WithCacheName(lc.IndexTag())) }, nil, "keeps its index"},
		"reset on localfs":        {func() (CacheEntries, error) { return CacheFor(store, WithAttr("reset", "true")) }, nil, "reset is refused"},
		"both only":               {func() (CacheEntries, error) { return CacheFor(store, WithImportOnly(), WithExportOnly()) }, nil, "not both"},
		"bad mode":                {func() (CacheEntries, error) { return CacheFor(store, WithCacheMode(9)) }, nil, "unknown mode"},
		"bad compression":         {func() (CacheEntries, error) { return CacheFor(store, WithCompression("lz4")) }, nil, "lz4"},
		"compression on s3":       {func() (CacheEntries, error) { return CacheFor(s3c, WithCompression("zstd")) }, nil, "always compresses with gzip"},
		"empty name":              {func() (CacheEntries, error) { return CacheFor(store, WithCacheName("")) }, nil, "empty name"},
		"registry index tag": {func() (CacheEntries, error) {
			return CacheFor(lc, WithRepository("localhost:5000/cache"), WithCacheName(ocirepo.DefaultIndexTag))
		}, nil, "BuildKit would overwrite it"},
		"registry digest": {func() (CacheEntries, error) {
			return RegistryCache("localhost:5000/c@sha256:" + strings.Repeat("1", 64))
		}, nil, "use a tag"},
		"registry two tags": {func() (CacheEntries, error) { return RegistryCache("localhost:5000/c:a", WithCacheName("b")) }, nil, `has tag "a"`},
		"registry bad ref":  {func() (CacheEntries, error) { return RegistryCache("acme/Cache") }, nil, "acme/Cache"},
		"s3 no bucket":      {func() (CacheEntries, error) { return S3Cache("", "") }, nil, "empty bucket"},
		"s3 half creds":     {func() (CacheEntries, error) { return S3Cache("b", "", WithS3Credentials("AKID", "", "")) }, nil, "required"},
		"local no dir":      {func() (CacheEntries, error) { return LocalCache("") }, nil, "empty directory"},
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

func TestCacheEntriesCloneAndAppend(t *testing.T) {
	local, _ := LocalCache("/l")
	remote, _ := RegistryCache("localhost:5000/c")
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
