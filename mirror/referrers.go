package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/registry"
)

// serveReferrers answers GET /v2/<name>/referrers/<digest>[?artifactType=]
// (OCI distribution spec 1.1, "Listing Referrers"): the upstream's
// referrers API answer or, for an upstream without one, its referrers tag
// schema's "sha256-<hex>" tag, kept with the subject so it is served when
// the upstream is down (registry.Resolver.Referrers). An artifactType
// query is applied here, whatever the upstream supports, and said so with
// OCI-Filters-Applied. A subject nobody refers to has an empty list (200),
// as the spec asks; a repository the upstream refuses is NAME_UNKNOWN.
// The referrers listed may then be fetched by digest under the name.
func (m *Mirror) serveReferrers(ctx context.Context, w http.ResponseWriter, req *http.Request, repo, ref string) {
	d, err := cache.ParseContentDigest(ref)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest")
		return
	}
	list, err := m.up.Referrers(ctx, repo, d, m.o.maxAge)
	switch {
	case err != nil && refused(err):
		noteFailure(w, reasonOf(err), err)
		writeError(w, http.StatusNotFound, codeNameUnknown, "repository not known upstream")
		return
	case err != nil:
		upstreamError(w, err, codeNameUnknown)
		return
	}
	digests := make([]v1.Hash, 0, len(list.Index.Manifests))
	for _, r := range list.Index.Manifests {
		digests = append(digests, r.Digest)
	}
	m.scope.add(repo, digests...) // the upstream lists them under this name
	manifests := list.Index.Manifests
	at, filtered := req.URL.Query().Get("artifactType"), false
	if at != "" {
		filtered = true
		kept := manifests[:0]
		for _, r := range manifests {
			if r.ArtifactType == at {
				kept = append(kept, r)
			}
		}
		manifests = kept
	}
	body, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: nonNil(manifests)})
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnavailable, "internal error")
		return
	}
	h := w.Header()
	h.Set("Content-Type", string(types.OCIImageIndex))
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if filtered {
		h.Set("OCI-Filters-Applied", "artifactType")
	}
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func nonNil(ds []v1.Descriptor) []v1.Descriptor {
	if ds == nil {
		return []v1.Descriptor{}
	}
	return ds
}

// untrustedError answers a tag whose image the trust policy refused:
// 403 DENIED, naming the digest and the reason (not the upstream's
// host, which the log has).
func untrustedError(w http.ResponseWriter, err error) bool {
	var ue *registry.UntrustedError
	if !errors.As(err, &ue) {
		return false
	}
	noteFailure(w, ReasonUntrusted, err)
	msg := "the image " + ue.Digest.String() + " is refused by the mirror's trust policy: " + ue.Reason
	if ue.Reason != registry.ReasonUnavailable && ue.Detail != "" {
		msg += ": " + ue.Detail
	}
	writeError(w, http.StatusForbidden, codeDenied, msg)
	return true
}
