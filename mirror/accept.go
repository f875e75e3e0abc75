package mirror

import (
	"bytes"
	"mime"
	"net/http"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Accept negotiation, the subset of distribution's (registry/handlers,
// GetManifest) that matters for pulls:
//
//   - A request with no Accept header, or one accepting */* or
//     application/*, is served the manifest as stored. (distribution
//     refuses OCI media types to a request without Accept; curl and
//     simple clients send none, and a mirror should not break them.)
//   - An OCI manifest or OCI index that the Accept header does not list is
//     404 MANIFEST_UNKNOWN, as distribution answers: such a client
//     (a Docker-schema2-only one) could not parse it.
//   - A Docker manifest list asked for by tag by a client that does not
//     accept lists is answered with its linux/amd64 manifest, as
//     distribution does for old clients; by digest it is served as it is.
//   - A Docker schema2 manifest is always served: there is nothing older
//     to convert it to (schema1 is gone from distribution too).
//
// q-values are ignored, as distribution ignores them.

// accepts reports whether req's Accept headers allow media type mt.
func accepts(req *http.Request, mt types.MediaType) bool {
	values := req.Header.Values("Accept")
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			t, _, err := mime.ParseMediaType(part)
			if err != nil {
				continue
			}
			if t == string(mt) || t == "*/*" || t == "application/*" {
				return true
			}
		}
	}
	return false
}

// refusedByAccept reports whether a manifest of type mt is answered
// MANIFEST_UNKNOWN for req's Accept header.
func refusedByAccept(req *http.Request, mt types.MediaType) bool {
	switch mt {
	case types.OCIManifestSchema1, types.OCIImageIndex:
		return !accepts(req, mt)
	}
	return false
}

// defaultPlatform is the manifest of a Docker manifest list that a
// client not accepting lists gets, as distribution gives it.
var defaultPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// downgradeList reports whether a tag request for a manifest of type mt
// should be answered with the list's default platform manifest instead.
func downgradeList(req *http.Request, byTag bool, mt types.MediaType) bool {
	return byTag && mt == types.DockerManifestList && !accepts(req, mt)
}

// platformEntry returns the digest of the default platform's entry of
// index raw.
func platformEntry(raw []byte) (v1.Hash, bool) {
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, false
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.OS == defaultPlatform.OS && d.Platform.Architecture == defaultPlatform.Architecture {
			return d.Digest, true
		}
	}
	return v1.Hash{}, false
}
