// Package imagewalk walks from an image index (a registry's, or an OCI
// layout's index.json) or an image manifest down to the image manifest of
// each platform, the one way the registry resolver and the BuildKit
// adapter both read images.
//
// # Platforms
//
// A platform is keyed "os/architecture[/variant]" ("linux/amd64",
// "linux/arm64/v8", "linux/arm/v7"), as the index descriptor gives it or,
// when the descriptor has none, as the image config says. A top-level
// manifest whose config states no platform is "unknown"; inside an index
// such a manifest is left out.
//
// # Attestations
//
// BuildKit lists attestation manifests (SBOM, provenance) in the index
// beside the images; they are not images of any platform and the walk
// leaves them out (IsAttestation).
package imagewalk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// maxDepth bounds how deeply indexes may nest (an OCI layout's index.json
// pointing to an image index is depth 1).
const maxDepth = 4

// Getter reads a blob the walk needs by digest: a manifest or index, or,
// with config true, an image config. Walk may call it from several
// goroutines at once.
type Getter func(d v1.Hash, config bool) ([]byte, error)

// Manifest is one platform's image manifest.
type Manifest struct {
	Platform   string        // the platform's key; see the package doc
	Descriptor v1.Descriptor // as the index lists it; for a top-level manifest its digest, size and media type
	Raw        []byte        // the manifest's bytes, as get returned them
}

// IsAttestation reports whether d, listed in an index, is an attestation
// rather than an image: it carries the annotation vnd.docker.reference.type
// (BuildKit's "attestation-manifest") or its platform is unknown/unknown.
func IsAttestation(d v1.Descriptor) bool {
	return d.Annotations["vnd.docker.reference.type"] != "" || (d.Platform != nil && d.Platform.OS == "unknown")
}

// PlatformKey formats p as "os/architecture[/variant]"; "unknown" when its
// OS or architecture is missing.
func PlatformKey(p v1.Platform) string {
	if p.OS == "" || p.Architecture == "" {
		return "unknown"
	}
	key := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		key += "/" + p.Variant
	}
	return key
}

// ParsePlatform parses "os/architecture[/variant]".
func ParsePlatform(s string) (*v1.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil || s == "" || p.OS == "" || p.Architecture == "" {
		return nil, fmt.Errorf("invalid platform %q: want os/arch[/variant]", s)
	}
	return p, nil
}

// Walk returns the image manifests that raw, the index or manifest with
// digest top, reaches, reading what it needs with get.
//
// With no platforms, it returns every image manifest of the index, in the
// index's order, following nested indexes, and a manifest whose
// descriptor has no platform is named after its config.
//
// With platforms, it returns one manifest per platform asked for, in that
// order and named as asked ("linux/arm64" stays "linux/arm64" even when it
// matched "linux/arm64/v8"), picking from raw's own descriptors as Match
// does; the chosen manifests are read at once, each digest once.
//
// A top-level image manifest is returned alone, named after its config,
// whatever platforms asks.
func Walk(raw []byte, top v1.Hash, platforms []string, get Getter) ([]Manifest, error) {
	n, err := parse(raw)
	if err != nil {
		return nil, fmt.Errorf("manifest %s is not JSON: %w", top, err)
	}
	if !n.isIndex() {
		desc := v1.Descriptor{Digest: top, Size: int64(len(raw)), MediaType: n.MediaType}
		key, err := configPlatform(n, get)
		if err != nil {
			return nil, err
		}
		return []Manifest{{Platform: key, Descriptor: desc, Raw: raw}}, nil
	}
	if len(platforms) == 0 {
		var out []Manifest
		err := walkAll(raw, top, 0, get, &out)
		return out, err
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", top, err)
	}
	descs := make([]v1.Descriptor, len(platforms))
	for i, want := range platforms {
		if descs[i], err = Match(im, want); err != nil {
			return nil, fmt.Errorf("%s: %w", top, err)
		}
	}
	// One round trip for all platforms, not one each; two platforms that
	// resolve to one manifest read it once.
	var digests []v1.Hash
	for _, d := range descs {
		if !slices.Contains(digests, d.Digest) {
			digests = append(digests, d.Digest)
		}
	}
	raws := make([][]byte, len(digests))
	var g errgroup.Group
	for i, d := range digests {
		g.Go(func() (err error) {
			raws[i], err = get(d, false)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]Manifest, len(platforms))
	for i, d := range descs {
		out[i] = Manifest{Platform: platforms[i], Descriptor: d, Raw: raws[slices.Index(digests, d.Digest)]}
	}
	return out, nil
}

func walkAll(raw []byte, top v1.Hash, depth int, get Getter, out *[]Manifest) error {
	if depth > maxDepth {
		return errors.New("indexes nested too deep")
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("index %s: %w", top, err)
	}
	for _, desc := range im.Manifests {
		if IsAttestation(desc) {
			continue
		}
		b, err := get(desc.Digest, false)
		if err != nil {
			return err
		}
		child, err := parse(b)
		if err != nil {
			return fmt.Errorf("%s: %w", desc.Digest, err)
		}
		if child.isIndex() {
			if err := walkAll(b, desc.Digest, depth+1, get, out); err != nil {
				return err
			}
			continue
		}
		key := ""
		if desc.Platform != nil {
			key = PlatformKey(*desc.Platform)
		} else if key, err = configPlatform(child, get); err != nil {
			return err
		}
		if key == "unknown" || strings.HasPrefix(key, "unknown/") {
			continue // an attestation its config gives away, or no image
		}
		*out = append(*out, Manifest{Platform: key, Descriptor: desc, Raw: b})
	}
	return nil
}

// node is what the walk reads of an index, a manifest or a config.
type node struct {
	MediaType types.MediaType `json:"mediaType"`
	Manifests json.RawMessage `json:"manifests"`
	Config    *v1.Descriptor  `json:"config"`
	// config fields
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
}

func parse(raw []byte) (*node, error) {
	var n node
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// isIndex: the media type says so or, with none, there is a manifest list
// and no config.
func (n *node) isIndex() bool {
	return n.MediaType.IsIndex() || (n.MediaType == "" && n.Manifests != nil && n.Config == nil)
}

// configPlatform names a manifest's platform from its config.
func configPlatform(m *node, get Getter) (string, error) {
	if m.Config == nil {
		return "", errors.New("image manifest without a config")
	}
	b, err := get(m.Config.Digest, true)
	if err != nil {
		return "", err
	}
	cfg, err := parse(b)
	if err != nil {
		return "unknown", nil
	}
	return PlatformKey(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}), nil
}

// Match finds the manifest for want among an index's own descriptors,
// skipping attestations and descriptors without a platform. arm64's
// variant "v8" is its default and matches a descriptor without a variant;
// a want without a variant takes the first descriptor of its OS and
// architecture when none matches exactly.
func Match(im *v1.IndexManifest, want string) (v1.Descriptor, error) {
	wp, err := ParsePlatform(want)
	if err != nil {
		return v1.Descriptor{}, err
	}
	variant := func(p *v1.Platform) string {
		if p.Architecture == "arm64" && p.Variant == "v8" {
			return ""
		}
		return p.Variant
	}
	var have []string
	var fallback *v1.Descriptor
	for i, d := range im.Manifests {
		p := d.Platform
		if p == nil || IsAttestation(d) {
			continue
		}
		have = append(have, p.String())
		if p.OS != wp.OS || p.Architecture != wp.Architecture {
			continue
		}
		if variant(p) == variant(wp) {
			return d, nil
		}
		if wp.Variant == "" && fallback == nil {
			fallback = &im.Manifests[i]
		}
	}
	if fallback != nil {
		return *fallback, nil
	}
	if len(have) == 0 {
		return v1.Descriptor{}, fmt.Errorf("no manifest for platform %s: the index lists %d manifests, none with a platform", want, len(im.Manifests))
	}
	return v1.Descriptor{}, fmt.Errorf("no manifest for platform %s (the index has %s)", want, strings.Join(have, ", "))
}
