package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Content named by a sha512 digest is passed through from the upstream,
// verified, and not stored: a store keeps each blob under its one sha256
// name (cache.ValidateDigest; localfs's blobs/sha256/<hex>, the keys of
// s3 and the leases and collectors of every backend), and teaching every
// backend a second name for the same bytes is a larger change than the
// rare sha512 image is worth. The upstream is asked under the client's
// name on every request, so it decides what the name may read, and no
// byte reaches a path. See the package doc, # Digests.

// passManifest answers a manifest request by sha512 digest from the
// upstream: one GET, verified against d, at most cache.MaxManifestBytes.
func (m *Mirror) passManifest(ctx context.Context, w http.ResponseWriter, req *http.Request, repo string, d v1.Hash) {
	_, raw, err := m.up.GetManifest(ctx, repo, d)
	if err != nil {
		upstreamError(w, err, codeManifestUnknown)
		return
	}
	m.noteManifest(repo, d, raw) // the upstream served it under this name
	writeManifest(w, req, d, mediaTypeOf(raw), raw)
}

// passBlob answers a blob request by sha512 digest from the upstream: a
// HEAD with one upstream HEAD, a GET with one upstream GET whose bytes
// are hashed as they are sent, the last one held back until they match d
// (the connection is cut otherwise). A Range is not served: bytes short of
// the end cannot be verified, so the whole blob is sent with 200, as RFC
// 9110 lets a server do.
func (m *Mirror) passBlob(ctx context.Context, w http.ResponseWriter, req *http.Request, repo string, d v1.Hash) {
	if req.Method == http.MethodHead {
		desc, err := m.up.HeadBlob(ctx, repo, d)
		if err != nil {
			upstreamError(w, err, codeBlobUnknown)
			return
		}
		passHeaders(w, d, desc.Size)
		return
	}
	rc, size, err := m.up.OpenBlob(ctx, repo, d)
	if err != nil {
		upstreamError(w, err, codeBlobUnknown)
		return
	}
	defer rc.Close()
	passHeaders(w, d, size)
	if err := copyHoldingLast(w, rc); err != nil {
		abort(ctx, w, err) // bad bytes or a broken download: no complete response
	}
}

// passHeaders answers 200 for blob d of size bytes (-1: unknown, sent
// chunked).
func passHeaders(w http.ResponseWriter, d v1.Hash, size int64) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Etag", `"`+d.String()+`"`)
	if size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
}

// copyHoldingLast copies src to dst but writes the last byte only once
// src has ended cleanly, so that an error the store's verifying reader
// returns at the end (a digest mismatch) leaves the response short. The
// size of a passed-through blob may be unknown, which copyVerified needs.
func copyHoldingLast(dst io.Writer, src io.Reader) error {
	// buf[0] is the byte held back from the previous read; each read fills
	// buf[1:], and one write sends the held byte and all but the last new
	// one, so holding back costs no extra write per chunk.
	buf := make([]byte, 1+copyChunk)
	held := false
	for {
		n, err := src.Read(buf[1:])
		if n > 0 {
			from := 1
			if held {
				from = 0
			}
			if _, werr := dst.Write(buf[from:n]); werr != nil {
				return werr
			}
			buf[0], held = buf[n], true
		}
		if errors.Is(err, io.EOF) {
			if held {
				_, werr := dst.Write(buf[:1])
				return werr
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}
