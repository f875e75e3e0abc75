package mirror_test

import (
	"bytes"
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
)

// A HEAD of a blob not stored is answered from one upstream HEAD, without
// downloading the blob (issue 19, item 7): before, it fetched the whole
// blob into the store to learn its size. A GET after it downloads it.
func TestHeadOfColdBlobDownloadsNothing(t *testing.T) {
	reg := testserver.StartRegistry(t)
	b := cachetest.NewBlob(701, 3<<20)
	pushBlob(t, reg.Host, "team/app", b.Digest, b.Data)
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := startMirror(t, reg.Host, store)
	m.upstream.counts()

	for range 2 {
		req, _ := http.NewRequest(http.MethodHead, m.srv.URL+"/v2/team/app/blobs/"+b.Digest.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(b.Data)) || resp.Header.Get("Docker-Content-Digest") != b.Digest.String() {
			t.Fatalf("HEAD of a cold blob: %d, length %d, digest %q; want 200, %d, %s",
				resp.StatusCode, resp.ContentLength, resp.Header.Get("Docker-Content-Digest"), len(b.Data), b.Digest)
		}
	}
	if n := m.upstream.counts(); n["GET blobs"] != 0 || n["HEAD blobs"] != 1 {
		t.Errorf("two HEADs of a cold blob asked the upstream %v, want one HEAD and no GET", n)
	}
	var stored []v1.Hash
	if err := store.Walk(t.Context(), func(h v1.Hash, _ int64) error { stored = append(stored, h); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 0 {
		t.Errorf("the store holds %v after HEADs alone, want nothing", stored)
	}

	resp := get(t, m.srv.URL+"/v2/team/app/blobs/"+b.Digest.String(), nil)
	if got := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(got, b.Data) {
		t.Fatalf("GET after the HEADs: %d, %d bytes", resp.StatusCode, len(got))
	}
	if n := m.upstream.counts(); n["GET blobs"] != 1 {
		t.Errorf("the GET asked the upstream %v, want one GET of the blob", n)
	}
	// A blob the upstream does not hold under the name: 404, no download.
	other := cachetest.NewBlob(702, 100)
	req, _ := http.NewRequest(http.MethodHead, m.srv.URL+"/v2/team/app/blobs/"+other.Digest.String(), nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of a blob the upstream lacks: %d, want 404", resp.StatusCode)
	}
}
