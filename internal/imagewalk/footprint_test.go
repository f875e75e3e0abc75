package imagewalk

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/memory"
)

// storedImage is a two-platform index with an attestation beside the
// images, every blob of it in store unless the test deletes it.
type storedImage struct {
	store              *memory.LayerCache
	top, amd, arm      v1.Descriptor
	amdLayer           v1.Descriptor
	amdBytes, armBytes int64 // a manifest, its config and layers
}

func newStoredImage(t *testing.T) *storedImage {
	t.Helper()
	store, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	s := &storedImage{store: store}
	b := newBlobs()
	put := func(d v1.Descriptor) v1.Descriptor {
		raw := b.m[d.Digest]
		if err := store.Put(context.Background(), d.Digest, int64(len(raw)), bytes.NewReader(raw)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	// image stores a config, two layers and a manifest, and counts them.
	image := func(os, arch string) (m, layer v1.Descriptor, size int64) {
		cfg := put(b.add(t, map[string]string{"os": os, "architecture": arch}))
		cfg.MediaType = types.OCIConfigJSON
		l1, l2 := put(b.add(t, "layer one of "+os+"/"+arch)), put(b.add(t, "layer two of "+os+"/"+arch))
		l1.MediaType, l2.MediaType = types.OCILayer, types.OCILayer
		m = put(b.add(t, v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: cfg, Layers: []v1.Descriptor{l1, l2}}))
		m.MediaType = types.OCIManifestSchema1
		return m, l1, cfg.Size + l1.Size + l2.Size + m.Size
	}
	s.amd, s.amdLayer, s.amdBytes = image("linux", "amd64")
	s.arm, _, s.armBytes = image("linux", "arm64")
	attest, _, _ := image("unknown", "unknown")
	s.top = put(b.add(t, v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{
		withPlatform(s.amd, "linux/amd64"), withPlatform(s.arm, "linux/arm64"), withPlatform(attest, "unknown/unknown"),
	}}))
	return s
}

func (s *storedImage) delete(t *testing.T, d v1.Hash) {
	t.Helper()
	if err := s.store.Delete(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}

func TestMeasure(t *testing.T) {
	ctx := context.Background()
	whole := newStoredImage(t)
	both := map[string]v1.Hash{"linux/amd64": whole.amd.Digest, "linux/arm64": whole.arm.Digest}
	const imageBlobs = 1 + 2*(1+1+2) // index; per platform a manifest, a config, two layers
	amdBytes := whole.top.Size + whole.amdBytes
	allBytes := amdBytes + whole.armBytes

	noArm := newStoredImage(t)
	noArm.delete(t, noArm.arm.Digest)
	noLayer := newStoredImage(t)
	noLayer.delete(t, noLayer.amdLayer.Digest)
	noTop := newStoredImage(t)
	noTop.delete(t, noTop.top.Digest)

	for _, tt := range []struct {
		name      string
		img       *storedImage
		manifests map[string]v1.Hash
		want      Footprint
	}{
		{"every stored platform, the attestation left out", whole, nil,
			Footprint{Platforms: []string{"linux/amd64", "linux/arm64"}, Blobs: imageBlobs, Bytes: allBytes}},
		{"the platforms resolved", whole, both,
			Footprint{Platforms: []string{"linux/amd64", "linux/arm64"}, Blobs: imageBlobs, Bytes: allBytes}},
		{"one platform of two", whole, map[string]v1.Hash{"linux/amd64": whole.amd.Digest},
			Footprint{Platforms: []string{"linux/amd64"}, Blobs: 1 + 4, Bytes: amdBytes}},
		{"a platform not stored nobody asked for", noArm, nil,
			Footprint{Platforms: []string{"linux/amd64"}, Blobs: 1 + 4, Bytes: amdBytes}},
		{"a resolved platform's manifest gone", noArm, both,
			Footprint{Platforms: []string{"linux/amd64"}, Blobs: 1 + 4, Bytes: amdBytes, Missing: 1}},
		{"a layer gone", noLayer, nil,
			Footprint{Platforms: []string{"linux/amd64", "linux/arm64"}, Blobs: imageBlobs - 1, Bytes: allBytes - whole.amdLayer.Size, Missing: 1}},
		{"the top gone", noTop, both, Footprint{Missing: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Measure(ctx, tt.img.store, tt.img.top.Digest, tt.manifests)
			if got.Err != nil {
				t.Fatal(got.Err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Footprint{}, "Err")); diff != "" {
				t.Errorf("Measure (-want +got):\n%s", diff)
			}
			err := got.Check("app:v1")
			if (tt.want.Missing > 0) != errors.Is(err, cache.ErrNotFound) {
				t.Errorf("Check = %v with %d missing", err, got.Missing)
			}
		})
	}
}

// A single-platform image is named after its config, and a top that is
// not a manifest is an error, not a count.
func TestMeasureManifestAndJunk(t *testing.T) {
	ctx := context.Background()
	img := newStoredImage(t)
	got := Measure(ctx, img.store, img.amd.Digest, nil)
	if got.Err != nil || got.Blobs != 4 || !cmp.Equal(got.Platforms, []string{"linux/amd64"}) {
		t.Errorf("Measure of a manifest = %+v, want linux/amd64 and 4 blobs", got)
	}
	junk := []byte("not a manifest")
	d, _, _ := v1.SHA256(bytes.NewReader(junk))
	if err := img.store.Put(ctx, d, int64(len(junk)), bytes.NewReader(junk)); err != nil {
		t.Fatal(err)
	}
	got = Measure(ctx, img.store, d, nil)
	if got.Err == nil || got.Blobs != 1 || got.Check("junk") == nil {
		t.Errorf("Measure of junk = %+v, want an error", got)
	}
}
