package mirror_test

import (
	"encoding/json"
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/internal/testimage"
)

// An OCI index asked for by a client whose Accept header does not list
// it is MANIFEST_UNKNOWN, as distribution answers; a client sending no
// Accept, or a wildcard, or the type, gets it.
func TestAcceptNegotiationOCI(t *testing.T) {
	f := newFixture(t)
	url := f.mirror.URL + "/v2/team/app/manifests/v1"
	for _, tc := range []struct {
		accept []string
		status int
	}{
		{nil, http.StatusOK},
		{[]string{"*/*"}, http.StatusOK},
		{[]string{string(types.DockerManifestSchema2) + ", " + string(types.OCIImageIndex) + ";q=0.5"}, http.StatusOK},
		{[]string{string(types.DockerManifestSchema2), string(types.DockerManifestList)}, http.StatusNotFound},
	} {
		h := http.Header{}
		for _, a := range tc.accept {
			h.Add("Accept", a)
		}
		resp := get(t, url, h)
		body := readAll(t, resp)
		if resp.StatusCode != tc.status {
			t.Errorf("Accept %q: %s, want %d", tc.accept, resp.Status, tc.status)
			continue
		}
		if tc.status == http.StatusOK {
			if ct := resp.Header.Get("Content-Type"); ct != string(types.OCIImageIndex) {
				t.Errorf("Accept %q: Content-Type %q", tc.accept, ct)
			}
			continue
		}
		var eb struct{ Errors []struct{ Code string } }
		if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 || eb.Errors[0].Code != "MANIFEST_UNKNOWN" {
			t.Errorf("Accept %q: body %s", tc.accept, body)
		}
	}
}

// A Docker manifest list asked for by tag by a client that does not
// accept lists is answered with its linux/amd64 manifest, as
// distribution does; by digest the list itself is served.
func TestAcceptDockerListDowngradesByTag(t *testing.T) {
	f := newFixture(t)
	list := mutate.IndexMediaType(testimage.ForTest(t).RandomIndex(platforms, 1<<10, 1), types.DockerManifestList)
	listDigest := testimage.ForTest(t).Push(f.up.host()+"/team/app:list", list)
	im, err := list.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var amd64 v1.Hash
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == "amd64" {
			amd64 = d.Digest
		}
	}
	accept := http.Header{"Accept": {string(types.DockerManifestSchema2), string(types.OCIManifestSchema1)}}
	resp := get(t, f.mirror.URL+"/v2/team/app/manifests/list", accept)
	readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != amd64.String() {
		t.Errorf("by tag: %s, digest %s, want the linux/amd64 manifest %s", resp.Status, resp.Header.Get("Docker-Content-Digest"), amd64)
	}
	resp = get(t, f.mirror.URL+"/v2/team/app/manifests/"+listDigest.String(), accept)
	readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != string(types.DockerManifestList) {
		t.Errorf("by digest: %s, Content-Type %s, want the list", resp.Status, resp.Header.Get("Content-Type"))
	}
}
