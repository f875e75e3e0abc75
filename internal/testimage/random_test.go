package testimage_test

import (
	"context"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/memory"
)

func TestRandomIndex(t *testing.T) {
	shared, err := random.Layer(100, "application/vnd.oci.image.layer.v1.tar")
	if err != nil {
		t.Fatal(err)
	}
	ti := testimage.ForTest(t)
	idx := ti.RandomIndex([]string{"linux/amd64", "linux/arm64/v8"}, 512, 2, shared)
	if err := validate.Index(idx); err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("%d manifests, want 2", len(im.Manifests))
	}
	for i, want := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}} {
		desc := im.Manifests[i]
		if !desc.Platform.Equals(want) {
			t.Errorf("manifest %d: platform %v, want %v", i, desc.Platform, want)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != want.OS || cf.Architecture != want.Architecture || cf.Variant != want.Variant {
			t.Errorf("manifest %d: config says %s/%s/%s, want %v", i, cf.OS, cf.Architecture, cf.Variant, want)
		}
		layers, _ := img.Layers()
		if len(layers) != 3 {
			t.Errorf("manifest %d: %d layers, want 2 random and 1 shared", i, len(layers))
		}
	}

	// Store puts every blob: the index, and per platform a manifest, a
	// config and three layers (the shared one once).
	store, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	d := ti.Store(store, idx)
	if want, _ := idx.Digest(); d != want {
		t.Errorf("Store = %s, want the index digest %s", d, want)
	}
	n := 0
	if err := store.Walk(context.Background(), func(v1.Hash, int64) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if want := 1 + 2*(1+1+2) + 1; n != want {
		t.Errorf("store holds %d blobs, want %d", n, want)
	}
}

func TestRandomIndexBadPlatform(t *testing.T) {
	if _, err := testimage.RandomIndex([]string{"linux/amd64/v1/x"}, 1, 1); err == nil {
		t.Error("RandomIndex accepted a bad platform")
	}
}
