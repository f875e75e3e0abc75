package testimage

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/google/go-containerregistry/pkg/name"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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

// Attach pushes Artifact(artifactType, content, annotations) as a
// referrer of image subject of repo ("host/name"), by digest, as cosign
// and oras attach: a registry with the referrers API lists it, and for
// one without, go-containerregistry's remote writes the referrers tag
// schema's index too. It returns the artifact's digest.
func Attach(ctx context.Context, repo string, subject v1.Hash, artifactType string, content []byte, annotations map[string]string) (v1.Hash, error) {
	rp, err := name.NewRepository(repo)
	if err != nil {
		return v1.Hash{}, err
	}
	desc, err := remote.Head(rp.Digest(subject.String()), remote.WithContext(ctx))
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := Artifact(artifactType, content, annotations, desc)
	if err != nil {
		return v1.Hash{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	return d, remote.Write(rp.Digest(d.String()), img, remote.WithContext(ctx))
}

// PushArtifact pushes Artifact(artifactType, content, annotations) at
// ref ("host/name:tag"), as cosign pushes its "sha256-<hex>.sig" tags,
// and returns its digest.
func PushArtifact(ctx context.Context, ref, artifactType string, content []byte, annotations map[string]string) (v1.Hash, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := Artifact(artifactType, content, annotations, nil)
	if err != nil {
		return v1.Hash{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	return d, remote.Write(tag, img, remote.WithContext(ctx))
}
