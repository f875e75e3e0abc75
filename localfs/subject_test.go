package localfs_test

import (
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
)

// TestGCKeepsWhatDescribesAKeptImage: a root marked with a subject (an
// image's signature, kept by a resolver as "repo:sha256-<hex>.sig") is
// kept, with its blobs, while another root reaches its subject, and goes
// with it once none does; a signature of a signature is kept with the
// chain.
func TestGCKeepsWhatDescribesAKeptImage(t *testing.T) {
	s := newStore(t)
	_, image := putRandomImage(t, s, 300, 1, "reg/app:v1")
	sig, sigDesc := describing(t, s, image.Digest, "reg/app:sha256-"+image.Digest.Hex+".sig")
	sigOfSig, _ := describing(t, s, sigDesc.Digest, "reg/app:sha256-"+sigDesc.Digest.Hex+".sig")
	unrelated, _ := describing(t, s, v1.Hash{Algorithm: "sha256", Hex: image.Digest.Hex[:63] + "0"}, "reg/app:sha256-0.sig")

	if _, err := s.GC(t.Context(), localfs.GCMaxBytes(1)); err != nil {
		t.Fatal(err)
	}
	for _, img := range []v1.Image{sig, sigOfSig} {
		for _, d := range blobsOf(t, img) {
			if !present(t, s, d) {
				t.Errorf("GC removed %s, of a signature whose image is kept", d)
			}
		}
	}
	for _, d := range blobsOf(t, unrelated) {
		if present(t, s, d) {
			t.Errorf("GC kept %s, of a signature whose subject is not kept", d)
		}
	}

	// The image's root goes: its signatures go with it.
	if err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
		im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool { return d.Digest == image.Digest })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(t.Context(), localfs.GCMaxBytes(1)); err != nil {
		t.Fatal(err)
	}
	for _, img := range []v1.Image{sig, sigOfSig} {
		for _, d := range blobsOf(t, img) {
			if present(t, s, d) {
				t.Errorf("GC kept %s, of a signature whose image is gone", d)
			}
		}
	}
}

// describing stores a random image as a root named refName marked with
// subject (cache.AnnotationSubject), as a resolver records a signature.
func describing(t *testing.T, s *localfs.Store, subject v1.Hash, refName string) (v1.Image, v1.Descriptor) {
	t.Helper()
	img, err := random.Image(100, 1)
	if err != nil {
		t.Fatal(err)
	}
	desc := putImage(t, s, img, refName)
	if err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
		for i := range im.Manifests {
			if im.Manifests[i].Digest == desc.Digest {
				im.Manifests[i].Annotations[cache.AnnotationSubject] = subject.String()
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return img, desc
}

// blobsOf lists an image's manifest, config and layers.
func blobsOf(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	md, _ := img.Digest()
	cfg, _ := img.ConfigName()
	out := []v1.Hash{md, cfg}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		out = append(out, d)
	}
	return out
}
