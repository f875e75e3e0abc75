package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/reach"
)

// serveManifest answers a manifest request. A tag goes through the
// resolver's policy (ResolveTop: one HEAD, stale-if-error); a digest
// stored is served with no upstream request, and one not stored is
// fetched first.
func (m *Mirror) serveManifest(ctx context.Context, w http.ResponseWriter, req *http.Request, repo, ref string) {
	var d v1.Hash
	if strings.Contains(ref, ":") {
		h, err := cache.ParseContentDigest(ref)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest")
			return
		}
		if h.Algorithm != "sha256" {
			m.passManifest(ctx, w, req, repo, h) // not stored: passthrough.go
			return
		}
		if err := m.inScope(ctx, repo, h, true); err != nil {
			upstreamError(w, err, codeManifestUnknown)
			return
		}
		if _, err := m.up.FetchManifest(ctx, repo, h); err != nil {
			upstreamError(w, err, codeManifestUnknown)
			return
		}
		d = h
	} else {
		if !validTag(ref) {
			writeError(w, http.StatusBadRequest, codeManifestInvalid, "invalid tag")
			return
		}
		top, err := m.up.ResolveTop(ctx, repo+":"+ref, m.o.maxAge)
		if err != nil {
			upstreamError(w, err, codeManifestUnknown)
			return
		}
		d = top.Descriptor.Digest
		m.tags.note(repo, ref, d)
	}
	raw, err := m.readManifest(ctx, d)
	if err != nil {
		upstreamError(w, err, codeManifestUnknown)
		return
	}
	m.noteManifest(repo, d, raw)
	mt := mediaTypeOf(raw)
	if downgradeList(req, !strings.Contains(ref, ":"), mt) {
		pd, ok := platformEntry(raw)
		if !ok {
			writeError(w, http.StatusNotFound, codeManifestUnknown, "manifest list has no linux/amd64 manifest, and the accept header does not support manifest lists")
			return
		}
		if _, err := m.up.FetchManifest(ctx, repo, pd); err != nil {
			upstreamError(w, err, codeManifestUnknown)
			return
		}
		if raw, err = m.readManifest(ctx, pd); err != nil {
			upstreamError(w, err, codeManifestUnknown)
			return
		}
		d, mt = pd, mediaTypeOf(raw)
		m.noteManifest(repo, d, raw)
	}
	writeManifest(w, req, d, mt, raw)
}

// writeManifest answers with manifest d, raw, of media type mt, unless
// the request's Accept refuses mt.
func writeManifest(w http.ResponseWriter, req *http.Request, d v1.Hash, mt types.MediaType, raw []byte) {
	if refusedByAccept(req, mt) {
		writeError(w, http.StatusNotFound, codeManifestUnknown, "the manifest is "+string(mt)+", which the accept header does not support")
		return
	}
	h := w.Header()
	h.Set("Content-Type", string(mt))
	h.Set("Content-Length", strconv.Itoa(len(raw)))
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Etag", `"`+d.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(raw)
	}
}

// readManifest reads manifest d from the store, verified by its Get.
func (m *Mirror) readManifest(ctx context.Context, d v1.Hash) ([]byte, error) {
	return reach.GetterOf(m.store.Get)(ctx, v1.Descriptor{Digest: d})
}

// mediaTypeOf is a manifest's own mediaType or, for an OCI manifest that
// omits it (it is optional there), what its fields say it is.
func mediaTypeOf(raw []byte) types.MediaType {
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(raw, &m) == nil && m.MediaType != "" {
		return m.MediaType
	}
	if len(m.Manifests) > 0 {
		return types.OCIImageIndex
	}
	return types.OCIManifestSchema1
}

// serveBlob answers a blob request: a stored blob from the store, one not
// stored from its download in flight (see ingest), which it starts if
// there is none. A Range of a blob not yet stored is served as its bytes
// arrive, but its last byte, like a whole response's, waits until the
// whole blob is verified.
func (m *Mirror) serveBlob(ctx context.Context, w http.ResponseWriter, req *http.Request, repo, ref string) {
	d, err := cache.ParseContentDigest(ref)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest")
		return
	}
	if d.Algorithm != "sha256" {
		m.passBlob(ctx, w, req, repo, d) // not stored: passthrough.go
		return
	}
	if err := m.inScope(ctx, repo, d, false); err != nil {
		upstreamError(w, err, codeBlobUnknown)
		return
	}
	if size, err := m.store.Stat(ctx, d); err == nil {
		m.serveStoredBlob(ctx, w, req, d, size)
		return
	}
	if req.Method == http.MethodHead && m.headColdBlob(ctx, w, req, repo, d) {
		return
	}
	in, err := m.joinIngest(repo, d, m.sizes.size(repo, d))
	if err != nil {
		upstreamError(w, err, codeBlobUnknown)
		return
	}
	defer m.leave(in)
	size, streamed, err := in.waitSize(ctx)
	if err == nil && !streamed {
		size, err = m.store.Stat(ctx, d)
		if err == nil {
			m.serveStoredBlob(ctx, w, req, d, size)
			return
		}
	}
	if err != nil {
		upstreamError(w, err, codeBlobUnknown)
		return
	}
	start, n, ok := blobHeaders(w, req, d, size)
	if !ok || req.Method == http.MethodHead {
		return
	}
	if err := in.copyRange(ctx, w, start, n); err != nil {
		// The blob failed verification or its download broke, or this
		// client left or stalled: cut the response short of its last byte.
		abort(ctx, w, err)
	}
}

// headColdBlob answers a HEAD of a blob not stored from what the mirror
// knows of its size (a manifest served under repo listed it, or the
// scope check asked the upstream), else from one upstream HEAD: a HEAD
// does not download the blob. It reports false, having written nothing,
// when the upstream's HEAD stated no length (then the blob's download
// answers it, as a GET would).
func (m *Mirror) headColdBlob(ctx context.Context, w http.ResponseWriter, req *http.Request, repo string, d v1.Hash) bool {
	size := m.sizes.size(repo, d)
	if size < 0 {
		desc, err := m.up.HeadBlob(ctx, repo, d)
		if err != nil {
			upstreamError(w, err, codeBlobUnknown)
			return true
		}
		if desc.Size < 0 {
			return false
		}
		size = desc.Size
		m.sizes.add(repo, d, size)
	}
	blobHeaders(w, req, d, size)
	return true
}

// blobHeaders answers a blob request's headers, with the status of its
// Range (200, 206, or 416 with ok false), and returns what to send.
func blobHeaders(w http.ResponseWriter, req *http.Request, d v1.Hash, size int64) (start, n int64, ok bool) {
	start, n, partial, ok := parseRange(req.Header.Get("Range"), size)
	if !ok {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		writeError(w, http.StatusRequestedRangeNotSatisfiable, codeBlobUnknown, "range not satisfiable")
		return 0, 0, false
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Etag", `"`+d.String()+`"`)
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	switch {
	case req.Method == http.MethodHead:
		w.WriteHeader(http.StatusOK)
	case partial:
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+n-1, size))
		w.WriteHeader(http.StatusPartialContent)
	default:
		w.WriteHeader(http.StatusOK)
	}
	return start, n, true
}
