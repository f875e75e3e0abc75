package mirror

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

// OCI distribution error codes the mirror answers with.
const (
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeManifestInvalid = "MANIFEST_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	codeUnavailable     = "UNAVAILABLE" // not in the spec's list; registries use it for 503
	codeDenied          = "DENIED"
)

type errorBody struct {
	Errors []errorItem `json:"errors"`
}

type errorItem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers with status and an OCI error body.
func writeError(w http.ResponseWriter, status int, code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Errors: []errorItem{{Code: code, Message: message}}})
}

// upstreamError answers for a failed fetch: unknown is the code for "the
// upstream does not have it" (MANIFEST_UNKNOWN or BLOB_UNKNOWN). The
// upstream's own message is not repeated to the client: it may name
// internal hosts; the access log gets it (noteFailure).
func upstreamError(w http.ResponseWriter, err error, unknown string) {
	if untrustedError(w, err) { // referrers.go
		return
	}
	noteFailure(w, reasonOf(err), err)
	var re *regclient.RemoteError
	switch {
	case errors.Is(err, cache.ErrNoSpace):
		writeError(w, http.StatusInsufficientStorage, codeUnavailable, "the mirror's cache has no room for this blob")
	case errors.As(err, &re) && (re.Status == http.StatusNotFound):
		writeError(w, http.StatusNotFound, unknown, "not found upstream")
	case errors.Is(err, cache.ErrNotFound):
		writeError(w, http.StatusNotFound, unknown, "not found")
	case errors.Is(err, cache.ErrDigestMismatch):
		writeError(w, http.StatusBadGateway, unknown, "the upstream served content that does not match its digest")
	case errors.Is(err, cache.ErrInvalidDigest):
		writeError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest")
	case errors.As(err, &re) && (re.Status == http.StatusUnauthorized || re.Status == http.StatusForbidden):
		writeError(w, http.StatusNotFound, unknown, "the upstream refused access")
	case errors.Is(err, cache.ErrOffline), errors.Is(err, ErrClosed), errors.As(err, &re):
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "the upstream is unavailable and nothing is cached")
	default:
		writeError(w, http.StatusInternalServerError, codeUnavailable, "internal error")
	}
}
