package testimage

import (
	"bytes"
	"encoding/json"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Artifact is an OCI artifact manifest of artifactType holding content
// as its one layer (with annotations), describing subject if it is not
// nil: what cosign and other clients attach to an image (a signature, an
// attestation, an SBOM). Its config's media type is the artifact type
// too: go-containerregistry's in-process registry lists a referrer's
// artifact type from it alone.
func Artifact(artifactType string, content []byte, annotations map[string]string, subject *v1.Descriptor) (v1.Image, error) {
	layer := static.NewLayer(content, types.MediaType(artifactType))
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: layer, Annotations: annotations})
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.MediaType(artifactType))
	if subject != nil {
		img = mutate.Subject(img, *subject).(v1.Image)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	m.ArtifactType = artifactType
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return artifactImage{img, raw}, nil
}

// artifactImage is an image whose manifest is raw (Artifact's, with its
// artifactType).
type artifactImage struct {
	v1.Image
	raw []byte
}

func (a artifactImage) RawManifest() ([]byte, error) { return a.raw, nil }
func (a artifactImage) Size() (int64, error)         { return int64(len(a.raw)), nil }
func (a artifactImage) Manifest() (*v1.Manifest, error) {
	return v1.ParseManifest(bytes.NewReader(a.raw))
}
func (a artifactImage) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(a.raw))
	return h, err
}
