package mirror_test

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
)

func sha512Of(b []byte) v1.Hash {
	s := sha512.Sum512(b)
	return v1.Hash{Algorithm: "sha512", Hex: hex.EncodeToString(s[:])}
}

// pushBlob uploads b to repo of a registry as blob d, in one monolithic
// upload (POST, then PUT with the digest).
func pushBlob(t *testing.T, host, repo string, d v1.Hash, b []byte) {
	t.Helper()
	resp, err := http.Post("http://"+host+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("starting an upload: %d, %v", resp.StatusCode, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload of %s: %d %s", d, resp.StatusCode, body)
	}
}

// A blob a real docker-registry holds under a sha512 digest is served
// through the mirror, verified, and under its own repository only; it is
// not stored (the store keeps sha256 names), so each request asks the
// upstream.
func TestSHA512BlobFromRealRegistry(t *testing.T) {
	reg := testserver.StartRegistry(t)
	blob := bytes.Repeat([]byte("sha512 layer "), 10000)
	d := sha512Of(blob)
	pushBlob(t, reg.Host, "team/app", d, blob)
	dir := t.TempDir()
	store, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := startMirror(t, reg.Host, store)

	resp := get(t, m.srv.URL+"/v2/team/app/blobs/"+d.String(), nil)
	got := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, blob) || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("GET sha512 blob: %d, %d bytes, digest %q; want 200, the %d bytes, %s",
			resp.StatusCode, len(got), resp.Header.Get("Docker-Content-Digest"), len(blob), d)
	}
	// A Range is answered with the whole blob: bytes short of its end
	// could not be verified.
	resp = get(t, m.srv.URL+"/v2/team/app/blobs/"+d.String(), http.Header{"Range": {"bytes=0-9"}})
	if got := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(got, blob) {
		t.Fatalf("GET sha512 blob with a Range: %d, %d bytes; want 200 and the whole blob", resp.StatusCode, len(got))
	}
	req, _ := http.NewRequest(http.MethodHead, m.srv.URL+"/v2/team/app/blobs/"+d.String(), nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(blob)) {
		t.Fatalf("HEAD sha512 blob: %d, length %d; want 200, %d", resp.StatusCode, resp.ContentLength, len(blob))
	}
	if n := m.upstream.counts(); n["GET blobs"] != 2 || n["HEAD blobs"] != 1 {
		t.Errorf("the upstream was asked %v, want each request passed on", n)
	}
	// The registry holds it under team/app only.
	resp = get(t, m.srv.URL+"/v2/team/other/blobs/"+d.String(), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the sha512 blob under another name: %d, want 404", resp.StatusCode)
	}
	var stored []v1.Hash
	if err := store.Walk(t.Context(), func(h v1.Hash, _ int64) error { stored = append(stored, h); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 0 {
		t.Errorf("the store holds %v after sha512 requests, want nothing", stored)
	}
}

// Bytes that do not hash to the sha512 digest asked for never make a
// complete response: a blob's is cut, a manifest's is refused. A
// manifest that does hash to it is served.
func TestSHA512VerifiedFromUpstream(t *testing.T) {
	blob := []byte("the real blob")
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` +
		strings.Repeat("a", 64) + `","size":2},"layers":[]}`)
	bd, md := sha512Of(blob), sha512Of(manifest)
	badManifest := sha512Of([]byte("another manifest"))
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/team/app/blobs/" + bd.String():
			w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
			w.Write([]byte("the fake blob")) // as long, other bytes
		case "/v2/team/app/manifests/" + md.String(), "/v2/team/app/manifests/" + badManifest.String():
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Write(manifest)
		default:
			http.NotFound(w, r)
		}
	})
	m := startLocalMirror(t, startHandler(t, up))

	// The response is cut before its last byte: before its headers, too,
	// when the blob is smaller than what the server buffers.
	resp, err := http.Get(m.srv.URL + "/v2/team/app/blobs/" + bd.String())
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a sha512 blob of the wrong bytes was read to its end")
	}
	resp = get(t, m.srv.URL+"/v2/team/app/manifests/"+md.String(), nil)
	if got := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(got, manifest) || resp.Header.Get("Docker-Content-Digest") != md.String() {
		t.Fatalf("GET sha512 manifest: %d %q", resp.StatusCode, got)
	}
	resp = get(t, m.srv.URL+"/v2/team/app/manifests/"+badManifest.String(), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET of a sha512 manifest the upstream served wrong: %d, want 502", resp.StatusCode)
	}
}

// Malformed digests of any algorithm are refused before the upstream or
// the store sees them.
func TestMalformedDigestsRefused(t *testing.T) {
	f := newFixture(t)
	hex512 := strings.Repeat("ab", 64)
	for _, ref := range []string{
		"sha512:" + hex512[:127],
		"sha512:" + hex512 + "0",
		"sha512:" + strings.ToUpper(hex512),
		"sha512:" + hex512[:126] + "..",
		"sha384:" + hex512[:96],
		"sha256:" + hex512,
		"md5:" + hex512[:32],
	} {
		for _, kind := range []string{"blobs", "manifests"} {
			resp := get(t, f.mirror.URL+"/v2/team/app/"+kind+"/"+ref, nil)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s %s: %d, want 400", kind, ref, resp.StatusCode)
			}
		}
	}
	if n := f.up.requests.Load(); n != 0 {
		t.Errorf("malformed digests made %d upstream requests, want none", n)
	}
}

// startHandler serves h on a loopback port as an upstream, and returns
// its host.
func startHandler(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
