package reach

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

type blobs map[v1.Hash][]byte

func (b blobs) add(mt types.MediaType, v any) v1.Descriptor {
	raw, ok := v.([]byte)
	if !ok {
		raw, _ = json.Marshal(v)
	}
	sum := sha256.Sum256(raw)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	b[d] = raw
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
}

func (b blobs) get(_ context.Context, d v1.Descriptor) ([]byte, error) {
	raw, ok := b[d.Digest]
	if !ok {
		return nil, fmt.Errorf("%s: %w", d.Digest, cache.ErrNotFound)
	}
	return raw, nil
}

// TestWalk: an index reaches its manifests, their configs and layers;
// a child manifest that is absent ends its branch but is reached; what
// a shared Set holds already is not read again.
func TestWalk(t *testing.T) {
	b := blobs{}
	layer := b.add(types.OCILayer, []byte("layer"))
	cfg := b.add(types.OCIConfigJSON, []byte("{}"))
	m := b.add(types.OCIManifestSchema1, v1.Manifest{SchemaVersion: 2, Config: cfg, Layers: []v1.Descriptor{layer}})
	absent := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(make([]byte, 32))}}
	top := b.add(types.OCIImageIndex, v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{m, absent}})

	seen := Set{}
	var manifests int
	read, err := Walk(t.Context(), top, b.get, seen, func(_ v1.Hash, manifest bool) {
		if manifest {
			manifests++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []v1.Descriptor{top, m, absent, cfg, layer} {
		if !seen.Has(d.Digest) {
			t.Errorf("%s not reached", d.Digest)
		}
	}
	if len(seen) != 5 || manifests != 3 || read != 3 {
		t.Errorf("reached %d, %d manifests, read %d; want 5, 3, 3", len(seen), manifests, read)
	}
	if read, err := Walk(t.Context(), top, b.get, seen, nil); err != nil || read != 0 {
		t.Errorf("a second walk with the same Set read %d manifests (%v), want none", read, err)
	}
	if got, err := GetterOf(func(ctx context.Context, d v1.Hash) (io.ReadCloser, error) { return nil, cache.ErrNotFound })(t.Context(), m); err == nil {
		t.Errorf("GetterOf of a missing blob = %q", got)
	}
}
