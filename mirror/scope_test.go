package mirror_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
)

// parts returns the first platform manifest of idx and its first layer.
func parts(t *testing.T, idx v1.ImageIndex) (manifest v1.Hash, layer v1.Descriptor) {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return im.Manifests[0].Digest, m.Layers[0]
}

// status GETs path from a mirror and returns the status and the OCI
// error code, if any.
func status(t *testing.T, base, path string) (int, string) {
	t.Helper()
	resp := get(t, base+path, nil)
	body := readAll(t, resp)
	var e struct{ Errors []struct{ Code string } }
	if json.Unmarshal(body, &e) == nil && len(e.Errors) == 1 {
		return resp.StatusCode, e.Errors[0].Code
	}
	return resp.StatusCode, ""
}

// A blob is served under a repository name only where the upstream (a
// real docker-registry, which keeps each repository's blobs apart) serves
// it: a blob of private/a asked for as other/b is BLOB_UNKNOWN, as the
// registry answers, until other/b's own manifest referencing it has been
// served. A normal pull costs no extra upstream request for this.
func TestBlobOfAnotherRepository(t *testing.T) {
	reg := testserver.StartRegistry(t)
	ti := testimage.ForTest(t)
	img := ti.RandomIndex(platforms, 4<<10, 1)
	ti.Push(reg.Host+"/private/a:v1", img)
	pm, l := parts(t, img)
	layer := l.Digest
	m := startLocalMirror(t, reg.Host)

	pullAll(t, m.host()+"/private/a:v1")
	if n := m.upstream.counts(); n["HEAD blobs"]+n["HEAD manifests"] != 0 || n["GET blobs"] == 0 {
		t.Fatalf("cold pull asked the upstream %v, want GETs only: the tag's index places the rest", n)
	}
	pullAll(t, m.host()+"/private/a:v1")
	if n := m.upstream.counts(); !maps.Equal(n, map[string]int{"HEAD manifests": 1}) {
		t.Fatalf("warm pull asked the upstream %v, want only the tag's HEAD", n)
	}

	for _, c := range []struct{ path, code string }{
		{"/v2/other/b/blobs/" + layer.String(), "BLOB_UNKNOWN"},
		{"/v2/other/b/manifests/" + pm.String(), "MANIFEST_UNKNOWN"},
	} {
		if st, code := status(t, m.srv.URL, c.path); st != http.StatusNotFound || code != c.code {
			t.Errorf("GET %s, stored for private/a: %d %s, want 404 %s", c.path, st, code, c.code)
		}
	}
	if n := m.upstream.counts(); !maps.Equal(n, map[string]int{"HEAD blobs": 1, "HEAD manifests": 1}) {
		t.Errorf("asking under another name cost the upstream %v, want one HEAD each", n)
	}

	// other/b gets the same image; once its manifests are served under
	// that name, its blobs are too, with no upstream request but the tag's.
	ti.Push(reg.Host+"/other/b:v1", img)
	for _, path := range []string{"/v2/other/b/manifests/v1", "/v2/other/b/manifests/" + pm.String(), "/v2/other/b/blobs/" + layer.String()} {
		if st, code := status(t, m.srv.URL, path); st != http.StatusOK {
			t.Fatalf("GET %s: %d %s, want 200", path, st, code)
		}
	}
	if n := m.upstream.counts(); !maps.Equal(n, map[string]int{"GET manifests": 1}) {
		t.Errorf("serving other/b asked the upstream %v, want only the GET of its tag", n)
	}
}

// With the upstream down, a mirror serves the blobs of the images it
// served under a name, and a mirror started anew over the same store
// those the store's roots of that name reach; under any other name,
// nothing.
func TestBlobScopeWithUpstreamDown(t *testing.T) {
	up := newUpstream(t)
	ti := testimage.ForTest(t)
	img := ti.RandomIndex(platforms, 4<<10, 1)
	ti.Push(up.host()+"/team/app:v1", img)
	pm, l := parts(t, img)
	layer := l.Digest
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	first := startMirror(t, up.host(), store)
	pullAll(t, first.host()+"/team/app:v1")
	up.down.Store(true)

	second := startMirror(t, up.host(), store)
	for _, m := range []*servedMirror{first, second} {
		for _, path := range []string{"/v2/team/app/blobs/" + layer.String(), "/v2/team/app/manifests/" + pm.String()} {
			if st, code := status(t, m.srv.URL, path); st != http.StatusOK {
				t.Errorf("GET %s with the upstream down: %d %s, want 200", path, st, code)
			}
		}
		if st, _ := status(t, m.srv.URL, "/v2/x/y/blobs/"+layer.String()); st != http.StatusServiceUnavailable {
			t.Errorf("GET of team/app's blob as x/y with the upstream down: %d, want 503", st)
		}
	}
	pullAll(t, first.host()+"/team/app:v1")
}
