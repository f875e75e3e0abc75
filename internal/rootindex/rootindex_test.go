package rootindex

import (
	"errors"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestMemoryKeepsOnlySuccessfulUpdates(t *testing.T) {
	var m Memory
	ctx := t.Context()
	root := v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: "aa"}, Annotations: map[string]string{"org.opencontainers.image.ref.name": "a"}}
	if err := m.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		im.Manifests = append(im.Manifests, root)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := m.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		im.Manifests = nil
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("UpdateIndex = %v, want fn's error", err)
	}
	im, err := m.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != root.Digest {
		t.Fatalf("roots = %v, want the one root kept by the successful update", im.Manifests)
	}
	// A caller changing what Index returned changes nothing inside.
	im.Manifests[0].Digest.Hex = "bb"
	if again, _ := m.Index(ctx); again.Manifests[0].Digest.Hex != "aa" {
		t.Fatalf("Index shares its slice with the caller")
	}
}
