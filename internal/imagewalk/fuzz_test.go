package imagewalk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

// fuzzSep separates the blobs of FuzzWalk's second input.
var fuzzSep = []byte("\n--\n")

func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// fuzzSeed is a two-platform index (one entry a nested index, one an
// attestation), its manifests and configs: a top and the blobs it reaches.
func fuzzSeed() (top, rest []byte) {
	var blobs [][]byte
	add := func(v any, mt types.MediaType) v1.Descriptor {
		b, _ := json.Marshal(v)
		blobs = append(blobs, b)
		return v1.Descriptor{MediaType: mt, Digest: digestOf(b), Size: int64(len(b))}
	}
	image := func(os, arch string) v1.Descriptor {
		cfg := add(map[string]string{"os": os, "architecture": arch}, types.OCIConfigJSON)
		return add(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: cfg, Layers: []v1.Descriptor{
			{MediaType: types.OCILayer, Digest: digestOf([]byte("l")), Size: 1},
		}}, types.OCIManifestSchema1)
	}
	amd := image("linux", "amd64")
	amd.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	arm := image("linux", "arm64") // no platform: named by its config
	nested := add(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{arm}}, types.OCIImageIndex)
	attest := image("unknown", "unknown")
	attest.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest"}
	top, _ = json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{amd, nested, attest}})
	return top, bytes.Join(blobs, fuzzSep)
}

// FuzzWalk feeds Walk an arbitrary top (index or manifest) and a getter
// over arbitrary blobs, honest (content addressed) or lying (any bytes for
// any digest). Walk must not panic, must hand the getter only valid
// digests and sizes that are not negative, must read at most maxReads
// blobs, and every manifest it returns must have a valid digest and a
// positive size that is its bytes' length; with an honest getter, its
// bytes must hash to its digest.
//
//	go test -run '^$' -fuzz '^FuzzWalk$' -fuzztime 20s ./internal/imagewalk/
func FuzzWalk(f *testing.F) {
	top, rest := fuzzSeed()
	f.Add(top, rest, "", false)
	f.Add(top, rest, "linux/amd64,linux/arm64", false)
	f.Add(top, rest, "linux/amd64", true)
	blobs := bytes.Split(rest, fuzzSep)
	f.Add(blobs[1], rest, "linux/amd64", false) // a single-platform manifest
	f.Add([]byte(`{"manifests":[{"digest":"sha256:`+strings.Repeat("0", 64)+`","size":-1,"platform":{"os":"linux","architecture":"amd64"}}]}`), []byte{}, "linux/amd64", true)

	f.Fuzz(func(t *testing.T, top, rest []byte, platforms string, lying bool) {
		pieces := bytes.Split(rest, fuzzSep)
		if len(pieces) > 64 {
			pieces = pieces[:64]
		}
		store := make(map[v1.Hash][]byte, len(pieces))
		for _, p := range pieces {
			store[digestOf(p)] = p
		}
		var reads atomic.Int64
		get := func(d v1.Descriptor, config bool) ([]byte, error) {
			if err := cache.ValidateDigest(d.Digest); err != nil || d.Size < 0 {
				t.Errorf("get(%+v): Walk passed a bad descriptor (%v)", d, err)
			}
			reads.Add(1)
			if b, ok := store[d.Digest]; ok {
				return b, nil
			}
			if lying && len(pieces) > 0 {
				return pieces[int(d.Digest.Hex[0])%len(pieces)], nil
			}
			return nil, errors.New("not found")
		}
		var ps []string
		if platforms != "" {
			ps = strings.SplitN(platforms, ",", 4)
		}
		ms, err := Walk(top, digestOf(top), ps, get)
		if n := reads.Load(); n > maxReads {
			t.Fatalf("Walk read %d blobs, more than %d", n, maxReads)
		}
		if err != nil {
			return
		}
		for _, m := range ms {
			d := m.Descriptor
			if err := cache.ValidateDigest(d.Digest); err != nil {
				t.Errorf("Walk returned %s with a bad digest: %v", m.Platform, err)
			}
			if d.Size <= 0 || d.Size != int64(len(m.Raw)) {
				t.Errorf("Walk returned %s with size %d for %d bytes", m.Platform, d.Size, len(m.Raw))
			}
			if !lying && digestOf(m.Raw) != d.Digest {
				t.Errorf("Walk returned %s as %s, whose bytes hash to %s", m.Platform, d.Digest, digestOf(m.Raw))
			}
			if m.Platform == "" {
				t.Errorf("Walk returned a manifest with no platform key")
			}
		}
	})
}
