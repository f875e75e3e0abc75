package buildcache_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/ocirepo"
	"github.com/buildcache/buildcache/tier"
)

func TestOpen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	fileURL := "file://" + filepath.Join(dir, "near") + "?max_bytes=1MiB&ttl=7d"
	for _, tc := range []struct {
		url  string
		want any
	}{
		{fileURL, (*localfs.Store)(nil)},
		{"mem://?max_bytes=64MiB", (*memory.LayerCache)(nil)},
		{"mem://", (*memory.LayerCache)(nil)},
		{"tier://?near=" + url.QueryEscape(fileURL) + "&far=" + url.QueryEscape("mem://") + "&async_far=8MiB", (*tier.Cache)(nil)},
	} {
		c, err := buildcache.Open(ctx, tc.url)
		if err != nil {
			t.Fatalf("Open(%q): %v", tc.url, err)
		}
		switch tc.want.(type) {
		case *localfs.Store:
			_, ok := c.(*localfs.Store)
			if !ok {
				t.Fatalf("Open(%q) = %T", tc.url, c)
			}
		case *memory.LayerCache:
			if _, ok := c.(*memory.LayerCache); !ok {
				t.Fatalf("Open(%q) = %T", tc.url, c)
			}
		case *tier.Cache:
			if _, ok := c.(*tier.Cache); !ok {
				t.Fatalf("Open(%q) = %T", tc.url, c)
			}
		}
	}
	// The budget from the URL is enforced.
	c, _ := buildcache.Open(ctx, fileURL)
	b := cachetest.NewBlob(1, 2<<20)
	if err := c.Put(ctx, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("2 MiB Put into a max_bytes=1MiB store = %v, want ErrNoSpace", err)
	}
}

func TestOpenRejectsBadURLs(t *testing.T) {
	for _, tc := range []struct{ url, wantMsg string }{
		{"", "no scheme"},
		{"/var/cache", "no scheme"},
		{"ftp://x/y", `unknown scheme "ftp"`},
		{"file:///tmp/x?max_byte=1GiB", `unknown query parameter "max_byte"`},
		{"file:///tmp/x?max_bytes=lots", "invalid size"},
		{"file:///tmp/x?ttl=forever", "invalid duration"},
		{"file:///tmp/x?max_bytes=1&max_bytes=2", "given 2 times"},
		{"file://host/tmp/x", "want file:///absolute/path"},
		{"mem:///path", "takes no host or path"},
		{"tier://?near=mem://", "needs near=<url> and far=<url>"},
		{"tier://?near=mem://&far=ftp://x", "far tier"},
		{"mem://?max_bytes=1&password=hunter2", `unknown query parameter "password"`},
	} {
		_, err := buildcache.Open(context.Background(), tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("Open(%q) = %v, want an error saying %q", tc.url, err, tc.wantMsg)
		}
	}
}

func TestURLMuxRegister(t *testing.T) {
	var m buildcache.URLMux
	shared, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	m.Register("team", func(context.Context, *url.URL) (cache.LayerCacheCloser, error) { return shared, nil })
	c, err := m.Open(t.Context(), "tier://?near=mem://&far=team://bucket")
	if err != nil {
		t.Fatal(err)
	}
	b := cachetest.NewBlob(2, 100)
	if err := c.Put(t.Context(), b.Digest, 100, bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	if _, err := shared.Stat(t.Context(), b.Digest); err != nil {
		t.Fatalf("a registered scheme as far tier did not get the write: %v", err)
	}
	if _, err := buildcache.Open(t.Context(), "team://x"); err == nil {
		t.Fatal("a scheme registered on one mux leaked into Open")
	}
}

// TestOpenS3 opens a bucket on a real S3 server by URL, with credentials
// from the environment as the SDK's default chain reads them, and stacks
// it behind a local near tier.
func TestOpenS3(t *testing.T) {
	srv := testserver.StartS3(t)
	bucket := srv.NewBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	s3URL := "s3://" + bucket + "/ci/?region=" + srv.Region + "&endpoint=" + url.QueryEscape(srv.Endpoint) + "&use_path_style=true"
	far, err := buildcache.Open(t.Context(), s3URL)
	if err != nil {
		t.Fatal(err)
	}
	nearURL := "file://" + t.TempDir()
	c, err := buildcache.Open(t.Context(), "tier://?near="+url.QueryEscape(nearURL)+"&far="+url.QueryEscape(s3URL))
	if err != nil {
		t.Fatal(err)
	}
	b := cachetest.NewBlob(3, 300000)
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	if size, err := far.Stat(t.Context(), b.Digest); err != nil || size != int64(len(b.Data)) {
		t.Fatalf("the bucket did not get the blob: %d, %v", size, err)
	}
	// The bucket's server goes away: the near tier keeps serving, misses
	// say why, and nothing fails outright.
	srv.Stop()
	if got, err := readAll(t, c, b.Digest); err != nil || !bytes.Equal(got, b.Data) {
		t.Fatalf("near read with the S3 server down: %v", err)
	}
	other := cachetest.NewBlob(4, 1000)
	if _, err := readAll(t, c, other.Digest); !errors.Is(err, cache.ErrNotFound) || !strings.Contains(err.Error(), srv.Endpoint) {
		t.Fatalf("miss with the S3 server down = %v, want ErrNotFound naming the endpoint", err)
	}
	if err := c.Put(t.Context(), other.Digest, 1000, bytes.NewReader(other.Data)); err != nil {
		t.Fatalf("Put with the S3 server down = %v, want success on the near tier", err)
	}
	if st := c.(*tier.Cache).StatsByTier(); st.FarErrors == 0 {
		t.Fatal("far failures were not counted")
	}
	for _, bad := range []string{
		"s3://" + bucket + "?region=x&secret=hunter2",
		"s3://user:pass@" + bucket + "/p",
		"s3:///nobucket",
		"s3://" + bucket + "?use_path_style=maybe",
		"s3://" + bucket + "?lease_ttl=10ms", // less than a second
		"s3://" + bucket + "?claim_ttl=soon",
	} {
		if _, err := buildcache.Open(t.Context(), bad); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "pass@") {
			t.Errorf("Open(%q) error leaks a secret: %v", bad, err)
		}
	}
}

func readAll(t *testing.T, c cache.LayerCache, d v1.Hash) ([]byte, error) {
	t.Helper()
	rc, err := c.Get(t.Context(), d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestOpenOCI(t *testing.T) {
	srv := testserver.StartRegistry(t)
	c, err := buildcache.Open(t.Context(), "oci://"+srv.Host+"/team/cache?index_tag=ci")
	if err != nil {
		t.Fatal(err)
	}
	b := cachetest.NewBlob(5, 5000)
	if err := c.Put(t.Context(), b.Digest, 5000, bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, c, b.Digest); err != nil || !bytes.Equal(got, b.Data) {
		t.Fatalf("round trip through a real registry: %v", err)
	}
	for _, bad := range []string{"oci://" + srv.Host, "oci://u:p@" + srv.Host + "/r", "oci://" + srv.Host + "/r?insecure=perhaps", "oci://" + srv.Host + "/r?tag=x"} {
		if _, err := buildcache.Open(t.Context(), bad); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
}

// TestOpenErrorsHideSecrets: a password in a URL that fails to parse, or
// in the endpoint of an s3:// URL, appears in no error, nested in a tier
// URL or not; credentials in an endpoint are refused like those in the
// URL's own userinfo.
func TestOpenErrorsHideSecrets(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	secrets := []string{"pass", "SECRET"}
	for _, raw := range []string{
		"oci://u:pass@host/repo%zz",
		"oci://pass@host/repo%zz",
		"s3://u:pass@b/p%zz",
		"file://u:pass@localhost/x%zz",
		"u:pass@host/repo%zz",
		"s3://b/p?endpoint=" + url.QueryEscape("http://KEY:SECRET@127.0.0.1:1"),
		"s3://b/p?endpoint=" + url.QueryEscape("http://SECRET@127.0.0.1:1"),
		"s3://b/p?endpoint=" + url.QueryEscape("http://KEY:SECRET@127.0.0.1:1/%zz"),
		"tier://?near=" + url.QueryEscape("oci://u:pass@host/repo%zz") + "&far=mem://",
		"tier://?near=oci://u:pass@host/repo%zz&far=mem://",
		"tier://?near=oci://u:pass@host/repo&far=mem://%zz",
		"tier://?near=mem://&far=" + url.QueryEscape("s3://b/p?endpoint="+url.QueryEscape("http://KEY:SECRET@127.0.0.1:1")),
		"tier://?near=mem://&far=" + url.QueryEscape("tier://?near=mem://&far="+url.QueryEscape("oci://u:pass@h/r%zz")),
	} {
		_, err := buildcache.Open(t.Context(), raw)
		if err == nil {
			t.Errorf("Open(%q) succeeded", raw)
			continue
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("Open(%q) error repeats %q: %v", raw, s, err)
			}
		}
	}
}

// TestOpenOCISingleLabelHost: the host of an oci:// URL is the registry,
// even when go-containerregistry's reference rules would take a name
// without a dot or port for a Docker Hub namespace.
func TestOpenOCISingleLabelHost(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"oci://harbor/team/cache", "harbor:443/team/cache"},
		{"oci://harbor/cache", "harbor:443/cache"},
		{"oci://localhost:5000/x", "localhost:5000/x"},
		{"oci://localhost/x", "localhost/x"},
		{"oci://registry.example.com/team/cache", "registry.example.com/team/cache"},
		// a dotted first path component is still part of the repository
		{"oci://harbor/example.com/cache", "harbor:443/example.com/cache"},
	} {
		c, err := buildcache.Open(t.Context(), tc.url)
		if err != nil {
			t.Errorf("Open(%q): %v", tc.url, err)
			continue
		}
		r, ok := c.(*ocirepo.Cache)
		if !ok {
			t.Fatalf("Open(%q) = %T", tc.url, c)
		}
		if got := r.Repository(); got != tc.want {
			t.Errorf("Open(%q).Repository() = %q, want %q", tc.url, got, tc.want)
		}
		// Read back as a reference, it names the URL's host, not Docker Hub.
		if back, err := name.NewRepository(r.Repository()); err != nil || !strings.HasPrefix(tc.want, back.RegistryStr()+"/") {
			t.Errorf("Open(%q).Repository() read back: %v, %v", tc.url, back, err)
		}
	}
	for _, bad := range []string{"oci://harbor/Team/cache", "oci://harbor/team/../cache", "oci://harbor/team//cache"} {
		if _, err := buildcache.Open(t.Context(), bad); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
}
