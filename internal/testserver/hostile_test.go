package testserver

import (
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

func hostileGet(t *testing.T, h *Hostile, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+h.Host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestHostileServesByTagAndDigest(t *testing.T) {
	h := StartHostile(t)
	cfg := h.Blob(ConfigJSON("linux", "amd64"))
	m := h.Manifest("app", "1", types.OCIManifestSchema1, ManifestJSON(cfg))
	for _, path := range []string{"/v2/app/manifests/1", "/v2/app/manifests/" + m.Digest.String()} {
		resp := hostileGet(t, h, path)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || Digest(b) != m.Digest || resp.Header.Get("Docker-Content-Digest") != m.Digest.String() {
			t.Fatalf("GET %s = %d, %d bytes, %v", path, resp.StatusCode, len(b), err)
		}
	}
	if resp := hostileGet(t, h, "/v2/other/manifests/1"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another repository's tag: %d, want 404", resp.StatusCode)
	}
	if n := h.Requests(m.Digest); n != 2 {
		t.Errorf("Requests = %d, want 2", n)
	}
}

// An endless blob stops when the client hangs up, and a client that does
// not is cut off at EndlessCap, never with a clean end.
func TestHostileEndless(t *testing.T) {
	h := StartHostile(t)
	d := h.Blob([]byte("x")).Digest
	h.Endless(d)
	resp := hostileGet(t, h, "/v2/app/blobs/"+d.String())
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp = hostileGet(t, h, "/v2/app/blobs/"+d.String())
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil || errors.Is(err, io.EOF) || n < EndlessCap-(1<<20) {
		t.Errorf("reading to the end: %d bytes, %v; want the connection cut after about %d", n, err, EndlessCap)
	}
	h.Close()
	if got := h.Served(d); got > 2*EndlessCap {
		t.Errorf("Served = %d", got)
	}
}
