package testserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// EndlessCap is how far a Hostile registry streams an endless blob or
// manifest, per response, before it cuts the connection: far more than any bound a
// client should keep, little enough that a test of a client that keeps
// none still ends, with its heap intact.
const EndlessCap = 32 << 20

// Hostile is an OCI distribution registry, in process, that serves what a
// test puts in it and misbehaves on request: it streams a blob or manifest
// forever (Endless), announces a false Content-Length (ClaimLength), and
// serves manifests and indexes with whatever sizes, media types and
// nesting the test writes (ManifestJSON, IndexJSON, Nest). It answers
// without authentication, on 127.0.0.1, and counts what it serves of each
// digest (Requests, Served).
//
// Blobs are shared by every repository; manifests belong to one.
type Hostile struct {
	Host string // "127.0.0.1:port", usable in image references

	srv *httptest.Server

	mu        sync.Mutex
	manifests map[string]hostileContent // "repo:tag" or "repo@digest"
	blobs     map[v1.Hash]hostileContent
	endless   map[v1.Hash]bool
	holds     map[v1.Hash]int64 // endless blobs that go silent after this many bytes
	claims    map[v1.Hash]int64
	requests  map[v1.Hash]int
	served    map[v1.Hash]*atomic.Int64
	active    map[v1.Hash]int // requests in progress
	held      map[v1.Hash]int // requests gone silent (EndlessHold)
	changed   chan struct{}   // closed and replaced when active or held change
}

type hostileContent struct {
	digest    v1.Hash
	mediaType types.MediaType
	data      []byte
}

// StartHostile starts a Hostile registry on 127.0.0.1; it stops when the
// test ends.
func StartHostile(t testing.TB) *Hostile {
	t.Helper()
	h := &Hostile{
		manifests: map[string]hostileContent{},
		blobs:     map[v1.Hash]hostileContent{},
		endless:   map[v1.Hash]bool{},
		claims:    map[v1.Hash]int64{},
		requests:  map[v1.Hash]int{},
		served:    map[v1.Hash]*atomic.Int64{},
		holds:     map[v1.Hash]int64{},
		active:    map[v1.Hash]int{},
		held:      map[v1.Hash]int{},
		changed:   make(chan struct{}),
	}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	h.Host = strings.TrimPrefix(h.srv.URL, "http://")
	return h
}

// Close stops the registry and waits for every request in progress to
// end: after it, Served counts all that was sent.
func (h *Hostile) Close() { h.srv.Close() }

// Digest returns the sha256 digest of data.
func Digest(data []byte) v1.Hash {
	sum := sha256.Sum256(data)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// Blob stores data as a blob and returns its true descriptor (digest and
// size, no media type), for the test to put in a manifest as it is or
// falsified.
func (h *Hostile) Blob(data []byte) v1.Descriptor {
	d := Digest(data)
	h.mu.Lock()
	h.blobs[d] = hostileContent{digest: d, mediaType: "application/octet-stream", data: data}
	h.mu.Unlock()
	return v1.Descriptor{Digest: d, Size: int64(len(data))}
}

// Manifest serves raw as repo's manifest under tag (if not empty) and
// under its digest, with Content-Type mediaType, and returns its true
// descriptor.
func (h *Hostile) Manifest(repo, tag string, mediaType types.MediaType, raw []byte) v1.Descriptor {
	d := Digest(raw)
	c := hostileContent{digest: d, mediaType: mediaType, data: raw}
	h.mu.Lock()
	if tag != "" {
		h.manifests[repo+":"+tag] = c
	}
	h.manifests[repo+"@"+d.String()] = c
	h.mu.Unlock()
	return v1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(raw))}
}

// Endless makes GETs of blob or manifest d send its bytes and then zeros
// without end, with no Content-Length, until the client hangs up or
// EndlessCap bytes are sent; then the connection is cut, never ended
// cleanly.
func (h *Hostile) Endless(d v1.Hash) {
	h.mu.Lock()
	h.endless[d] = true
	h.mu.Unlock()
}

// EndlessHold is Endless, except that after n bytes the answer goes
// silent, its connection open, until the client hangs up (Close waits for
// that): a download nothing bounds, which only its client can end.
func (h *Hostile) EndlessHold(d v1.Hash, n int64) {
	h.mu.Lock()
	h.endless[d] = true
	h.holds[d] = n
	h.mu.Unlock()
}

// Active returns how many requests for d are in progress, and Held how
// many of them went silent (EndlessHold).
func (h *Hostile) Active(d v1.Hash) (active, held int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.active[d], h.held[d]
}

// Await waits until cond, which may call Active, holds; it is checked
// again whenever a request starts, ends or goes silent.
func (h *Hostile) Await(ctx context.Context, cond func() bool) error {
	for {
		h.mu.Lock()
		ch := h.changed
		h.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// count adds delta to m[d] and wakes Await.
func (h *Hostile) count(m map[v1.Hash]int, d v1.Hash, delta int) {
	h.mu.Lock()
	m[d] += delta
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// ClaimLength makes answers for blob or manifest d announce n bytes in
// Content-Length whatever they send (a GET sends the true bytes, so the
// client sees a body cut short or one longer than announced).
func (h *Hostile) ClaimLength(d v1.Hash, n int64) {
	h.mu.Lock()
	h.claims[d] = n
	h.mu.Unlock()
}

// Requests returns how many requests named blob or manifest d (by digest,
// or by a tag that points to it).
func (h *Hostile) Requests(d v1.Hash) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests[d]
}

// Served returns how many bytes of d's bodies were written so far, over
// all requests (Close first to count them all).
func (h *Hostile) Served(d v1.Hash) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := h.served[d]; n != nil {
		return n.Load()
	}
	return 0
}

func (h *Hostile) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v2/")
	if path == "" || path == r.URL.Path {
		w.WriteHeader(http.StatusOK) // the /v2/ ping
		return
	}
	var c hostileContent
	var ok bool
	h.mu.Lock()
	if repo, ref, found := cutLast(path, "/manifests/"); found {
		sep := ":"
		if strings.HasPrefix(ref, "sha256:") {
			sep = "@"
		}
		c, ok = h.manifests[repo+sep+ref]
	} else if _, ref, found := cutLast(path, "/blobs/"); found {
		if d, err := v1.NewHash(ref); err == nil {
			c, ok = h.blobs[d]
		}
	}
	if !ok {
		h.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":[{"code":"NOT_FOUND"}]}`))
		return
	}
	h.requests[c.digest]++
	endless := h.endless[c.digest]
	hold, holds := h.holds[c.digest]
	claim, claimed := h.claims[c.digest]
	served := h.served[c.digest]
	if served == nil {
		served = new(atomic.Int64)
		h.served[c.digest] = served
	}
	h.mu.Unlock()
	h.count(h.active, c.digest, 1)
	defer h.count(h.active, c.digest, -1)

	hdr := w.Header()
	hdr.Set("Content-Type", string(c.mediaType))
	hdr.Set("Docker-Content-Digest", c.digest.String())
	switch {
	case claimed:
		hdr.Set("Content-Length", strconv.FormatInt(claim, 10))
	case !endless:
		hdr.Set("Content-Length", strconv.Itoa(len(c.data)))
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.WriteHeader(http.StatusOK)
	n, err := w.Write(c.data)
	served.Add(int64(n))
	if !endless || err != nil {
		return
	}
	zeros := make([]byte, 32<<10)
	for sent := int64(n); sent < EndlessCap; sent += int64(n) {
		if holds && sent >= hold {
			w.(http.Flusher).Flush()
			h.count(h.held, c.digest, 1)
			defer h.count(h.held, c.digest, -1)
			<-r.Context().Done() // the client hung up
			return
		}
		n, err = w.Write(zeros)
		served.Add(int64(n))
		if err != nil {
			return // the client hung up
		}
	}
	panic(http.ErrAbortHandler) // cut the connection: no clean end
}

// cutLast splits s around the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// ManifestJSON returns an OCI image manifest of config and layers,
// written as given: sizes, digests and media types are the caller's.
func ManifestJSON(config v1.Descriptor, layers ...v1.Descriptor) []byte {
	if config.MediaType == "" {
		config.MediaType = types.OCIConfigJSON
	}
	for i := range layers {
		if layers[i].MediaType == "" {
			layers[i].MediaType = types.OCILayer
		}
	}
	if layers == nil {
		layers = []v1.Descriptor{}
	}
	return mustJSON(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: config, Layers: layers})
}

// IndexJSON returns an OCI image index of manifests, written as given.
func IndexJSON(manifests ...v1.Descriptor) []byte {
	if manifests == nil {
		manifests = []v1.Descriptor{}
	}
	return mustJSON(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: manifests})
}

// ConfigJSON returns an image config for platform os/arch.
func ConfigJSON(os, arch string) []byte {
	return mustJSON(map[string]any{"os": os, "architecture": arch, "rootfs": map[string]any{"type": "layers", "diff_ids": []string{}}})
}

// Nest serves depth indexes in repo, each listing the next (for platform
// p, if not nil), the last listing leaf, and returns the descriptor of
// the outermost one, which is also served as repo:tag.
func (h *Hostile) Nest(repo, tag string, depth int, p *v1.Platform, leaf v1.Descriptor) v1.Descriptor {
	d := leaf
	for i := 0; i < depth; i++ {
		d.Platform = p
		t := ""
		if i == depth-1 {
			t = tag
		}
		d = h.Manifest(repo, t, types.OCIImageIndex, IndexJSON(d))
	}
	return d
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only the types above, which always marshal
	}
	return b
}
