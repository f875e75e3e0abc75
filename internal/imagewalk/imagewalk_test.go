package imagewalk

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// blobs is a content store for the walk, counting reads.
type blobs struct {
	m     map[v1.Hash][]byte
	mu    sync.Mutex
	reads map[v1.Hash]int
}

func newBlobs() *blobs { return &blobs{m: map[v1.Hash][]byte{}, reads: map[v1.Hash]int{}} }

func (b *blobs) add(t *testing.T, v any) v1.Descriptor {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	b.m[d] = raw
	return v1.Descriptor{Digest: d, Size: int64(len(raw))}
}

func (b *blobs) get(desc v1.Descriptor, _ bool) ([]byte, error) {
	d := desc.Digest
	b.mu.Lock()
	b.reads[d]++
	b.mu.Unlock()
	raw, ok := b.m[d]
	if !ok {
		return nil, fmt.Errorf("no blob %s", d)
	}
	return raw, nil
}

// image adds a config for platform p ("" for none) and a manifest using it.
func (b *blobs) image(t *testing.T, os, arch, variant string) v1.Descriptor {
	cfg := b.add(t, map[string]string{"os": os, "architecture": arch, "variant": variant})
	cfg.MediaType = types.OCIConfigJSON
	m := b.add(t, v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: cfg, Layers: []v1.Descriptor{}})
	m.MediaType = types.OCIManifestSchema1
	return m
}

func withPlatform(d v1.Descriptor, p string) v1.Descriptor {
	pp, err := ParsePlatform(p)
	if err != nil {
		panic(err)
	}
	d.Platform = pp
	return d
}

func keys(ms []Manifest) map[string]v1.Hash {
	out := map[string]v1.Hash{}
	for _, m := range ms {
		out[m.Platform] = m.Descriptor.Digest
	}
	return out
}

func TestWalk(t *testing.T) {
	b := newBlobs()
	amd := b.image(t, "linux", "amd64", "")
	arm := b.image(t, "linux", "arm64", "v8")
	armv7 := b.image(t, "linux", "arm", "v7")
	noPlatform := b.image(t, "linux", "s390x", "")
	attest := b.image(t, "unknown", "unknown", "")
	attestAnnotated := attest
	attestAnnotated.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest"}
	attestAnnotated.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"} // the annotation decides
	attestByConfig := attest                                                    // no platform, no annotation: its config says unknown
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{
		withPlatform(amd, "linux/amd64"), withPlatform(arm, "linux/arm64/v8"), withPlatform(armv7, "linux/arm/v7"),
		noPlatform, attestAnnotated, attestByConfig,
	}}
	idxDesc := b.add(t, idx)
	idxDesc.MediaType = types.OCIImageIndex
	idxRaw := b.m[idxDesc.Digest]
	// An OCI layout's index.json: no media type, one image index inside.
	layout, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{idxDesc}})

	all := map[string]v1.Hash{"linux/amd64": amd.Digest, "linux/arm64/v8": arm.Digest, "linux/arm/v7": armv7.Digest, "linux/s390x": noPlatform.Digest}
	for _, tt := range []struct {
		name      string
		raw       []byte
		top       v1.Hash
		platforms []string
		want      map[string]v1.Hash
		wantErr   string
	}{
		{"every platform of an index", idxRaw, idxDesc.Digest, nil, all, ""},
		{"every platform through an OCI layout", layout, v1.Hash{}, nil, all, ""},
		{"chosen platforms, named as asked", idxRaw, idxDesc.Digest, []string{"linux/arm64", "linux/amd64"},
			map[string]v1.Hash{"linux/arm64": arm.Digest, "linux/amd64": amd.Digest}, ""},
		{"arm64/v8 matches", idxRaw, idxDesc.Digest, []string{"linux/arm64/v8"}, map[string]v1.Hash{"linux/arm64/v8": arm.Digest}, ""},
		{"arm without variant falls back", idxRaw, idxDesc.Digest, []string{"linux/arm"}, map[string]v1.Hash{"linux/arm": armv7.Digest}, ""},
		{"a platform only a config names is not chosen", idxRaw, idxDesc.Digest, []string{"linux/s390x"}, nil, "no manifest for platform linux/s390x"},
		{"a single manifest names itself", b.m[armv7.Digest], armv7.Digest, []string{"linux/amd64"}, map[string]v1.Hash{"linux/arm/v7": armv7.Digest}, ""},
		{"not JSON", []byte("{"), idxDesc.Digest, nil, nil, "is not JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Walk(tt.raw, tt.top, tt.platforms, b.get)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Walk = %v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, keys(got)); diff != "" {
				t.Errorf("Walk (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWalkReadsEachChosenManifestOnce(t *testing.T) {
	b := newBlobs()
	amd := b.image(t, "linux", "amd64", "")
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{withPlatform(amd, "linux/amd64")}}
	d := b.add(t, idx)
	if _, err := Walk(b.m[d.Digest], d.Digest, []string{"linux/amd64", "linux/amd64"}, b.get); err != nil {
		t.Fatal(err)
	}
	if b.reads[amd.Digest] != 1 {
		t.Fatalf("the manifest was read %d times, want 1", b.reads[amd.Digest])
	}
}

func TestIsAttestation(t *testing.T) {
	for _, tt := range []struct {
		d    v1.Descriptor
		want bool
	}{
		{v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}, false},
		{v1.Descriptor{}, false},
		{v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}, true},
		{v1.Descriptor{Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}}, true},
	} {
		if got := IsAttestation(tt.d); got != tt.want {
			t.Errorf("IsAttestation(%+v) = %v, want %v", tt.d, got, tt.want)
		}
	}
}

func TestPlatformKey(t *testing.T) {
	for _, tt := range []struct {
		p    v1.Platform
		want string
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, "linux/amd64"},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "linux/arm64/v8"},
		{v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0"}, "windows/amd64"},
		{v1.Platform{OS: "linux"}, "unknown"},
	} {
		if got := PlatformKey(tt.p); got != tt.want {
			t.Errorf("PlatformKey(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

// Issue 11: a walk checks every descriptor before it reads it, keeps
// stated sizes, and bounds its reads; a hostile index cannot make it read
// without end or return a manifest whose size is a lie.
func TestWalkBounds(t *testing.T) {
	b := newBlobs()
	amd := b.image(t, "linux", "amd64", "")
	amdP := withPlatform(amd, "linux/amd64")
	index := func(ds ...v1.Descriptor) (v1.Descriptor, []byte) {
		d := b.add(t, v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: ds})
		d.MediaType = types.OCIImageIndex
		return d, b.m[d.Digest]
	}
	negative, wrong, noDigest, layer := amdP, amdP, amdP, amdP
	negative.Size = -1
	wrong.Size = amd.Size + 1
	noDigest.Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("a", 128)}
	layer.MediaType = types.OCILayer

	// Each level lists the one below 40 times: 40^3 reads unbounded.
	level := amdP
	for range 3 {
		d, _ := index(slices.Repeat([]v1.Descriptor{level}, 40)...)
		level = d
	}
	wideTop, wideRaw := index(level)
	// A single manifest whose config's stated size is negative.
	badCfg := b.add(t, map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
		"config": map[string]any{"mediaType": types.OCIConfigJSON, "digest": amd.Digest, "size": -7}})

	for _, tt := range []struct {
		name      string
		top       v1.Descriptor
		raw       []byte
		platforms []string
		wantErr   string
	}{
		{"negative size, chosen", v1.Descriptor{}, nil, []string{"linux/amd64"}, "with a negative size, -1"},
		{"negative size, all", v1.Descriptor{}, nil, nil, "with a negative size, -1"},
		{"wrong size", v1.Descriptor{}, nil, nil, "its descriptor says"},
		{"sha512 digest", v1.Descriptor{}, nil, nil, "lists a bad digest"},
		{"a layer listed as a manifest", v1.Descriptor{}, nil, []string{"linux/amd64"}, "no manifest for platform"},
		{"wide", wideTop, wideRaw, nil, "reaches more than 1024 manifests and configs"},
		{"config of negative size", badCfg, b.m[badCfg.Digest], nil, "with a negative size, -7"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			top, raw := tt.top, tt.raw
			if raw == nil {
				d := map[string]v1.Descriptor{"negative size, chosen": negative, "negative size, all": negative,
					"wrong size": wrong, "sha512 digest": noDigest, "a layer listed as a manifest": layer}[tt.name]
				top, raw = index(d)
			}
			b.reads = map[v1.Hash]int{}
			got, err := Walk(raw, top.Digest, tt.platforms, b.get)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Walk = %v, %v; want an error with %q", got, err, tt.wantErr)
			}
			total := 0
			for _, n := range b.reads {
				total += n
			}
			if total > maxReads {
				t.Errorf("%d reads, more than %d", total, maxReads)
			}
		})
	}
}

// "no manifest for platform" names 10 platforms and counts the rest
// (issue 11, item 8: 159 KB of stderr for 10,000 entries).
func TestMatchListsTenPlatforms(t *testing.T) {
	im := &v1.IndexManifest{}
	for i := range 10000 {
		im.Manifests = append(im.Manifests, v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: fmt.Sprint("arch", i)}})
	}
	im.Manifests[3].Platform.Architecture = strings.Repeat("\x1b[31m", 100) // a terminal escape, repeated
	_, err := Match(im, "linux/amd64")
	if err == nil || !strings.HasSuffix(err.Error(), "linux/arch9 … and 9990 more)") {
		t.Fatalf("Match = %.300q; want 10 platforms and a count of the rest", fmt.Sprint(err))
	}
	if len(err.Error()) > 512 || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("Match error (%d bytes) = %q: too long or not clipped", len(err.Error()), err)
	}
}
