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
//
// # Bounds
//
// What a walk reads comes from a registry or a directory that may be
// hostile, so every read is bounded before it is made. Each descriptor the
// walk follows (a child manifest or index, a config) must have a sha256
// digest and a size that is not negative, and bytes of a stated size must
// have that size; a size of 0 is read as "not stated" (an OCI layout
// written by hand may leave it out) and the getter's own cap applies.
// Indexes nest at most 4 deep, and a walk of every platform reads
// at most 1024 manifests and configs. Descriptors whose media type is
// neither an image manifest nor an index (an artifact, a layer listed by
// mistake) are skipped, and a top-level manifest of such a type is an
// error. The getter bounds each read by the descriptor's size and its own
// cap.
//
// # Stores
//
// Measure walks an image held in a store (a cache.LayerCache) with no
// network and counts what it occupies and what it lacks: the footprint
// `buildcache ls` and `buildcache warm` report.
package imagewalk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/buildcache/buildcache/cache"
)

// maxDepth bounds how deeply indexes may nest (an OCI layout's index.json
// pointing to an image index is depth 1).
const maxDepth = 4

// maxReads bounds the manifests and configs a walk of every platform
// reads: real indexes list tens of manifests, and a hostile one could
// list the same nested index thousands of times at every level.
const maxReads = 1024

// maxListed bounds the platforms an error lists: an index may have
// thousands.
const maxListed = 10

// Getter reads a blob the walk needs: the manifest or index desc
// describes, or, with config true, an image config. Walk has checked that
// desc's digest is a valid sha256 digest and its size is not negative;
// the getter verifies the bytes against the digest and reads at most
// desc.Size bytes (its own cap when the size is 0, not stated). Walk may
// call it from several goroutines at once.
type Getter func(desc v1.Descriptor, config bool) ([]byte, error)

// ErrSkip, returned by a Getter for a manifest or an index in a walk of
// every platform, leaves that descriptor out of the walk, which goes on
// with the others: a store that holds only some platforms of an index
// walks as the image it has. Anywhere else (a config, a walk of chosen
// platforms) it is an error like any other.
var ErrSkip = errors.New("imagewalk: skip this manifest")

// Manifest is one platform's image manifest.
type Manifest struct {
	Platform   string        // the platform's key; see the package doc
	Descriptor v1.Descriptor // as the index lists it (its Size that of Raw); for a top-level manifest its digest, size and media type
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
// descriptor has no platform is named after its config; those for which
// get returns ErrSkip are left out.
//
// With platforms, it returns one manifest per platform asked for, in that
// order and named as asked ("linux/arm64" stays "linux/arm64" even when it
// matched "linux/arm64/v8"), picking from raw's own descriptors as Match
// does; the chosen manifests are read at once, each digest once, and each
// must be an image manifest.
//
// A top-level image manifest is returned alone, named after its config,
// whatever platforms asks.
//
// Every descriptor is checked before get is called (see the package doc,
// # Bounds); get's errors are returned as they are.
func Walk(raw []byte, top v1.Hash, platforms []string, get Getter) ([]Manifest, error) {
	n, err := parse(raw)
	if err != nil {
		return nil, fmt.Errorf("manifest %s is not JSON: %w", top, err)
	}
	w := &walker{top: top, get: get}
	if !n.isIndex() {
		if !n.isImage() {
			return nil, fmt.Errorf("manifest %s has media type %s, not an image manifest or index", top, quote(string(n.MediaType)))
		}
		desc := v1.Descriptor{Digest: top, Size: int64(len(raw)), MediaType: n.MediaType}
		key, err := w.configPlatform(top, n)
		if err != nil {
			return nil, err
		}
		return []Manifest{{Platform: key, Descriptor: desc, Raw: raw}}, nil
	}
	if len(platforms) == 0 {
		var out []Manifest
		err := w.walkAll(raw, top, 0, &out)
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
		if err := checkDescriptor(top, descs[i]); err != nil {
			return nil, err
		}
	}
	// One round trip for all platforms, not one each; two platforms that
	// resolve to one manifest read it once.
	var chosen []v1.Descriptor
	for _, d := range descs {
		if !slices.ContainsFunc(chosen, func(c v1.Descriptor) bool { return c.Digest == d.Digest }) {
			chosen = append(chosen, d)
		}
	}
	raws := make([][]byte, len(chosen))
	var g errgroup.Group
	for i, d := range chosen {
		g.Go(func() (err error) {
			raws[i], err = w.read(top, d, false)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, b := range raws {
		m, err := parse(b)
		if err != nil {
			return nil, fmt.Errorf("%s: manifest %s is not JSON: %w", top, chosen[i].Digest, err)
		}
		if m.isIndex() || !m.isImage() {
			return nil, fmt.Errorf("%s: %s, listed as an image manifest, is not one (media type %s)", top, chosen[i].Digest, quote(string(m.MediaType)))
		}
	}
	out := make([]Manifest, len(platforms))
	for i, d := range descs {
		j := slices.IndexFunc(chosen, func(c v1.Descriptor) bool { return c.Digest == d.Digest })
		d.Size = int64(len(raws[j]))
		out[i] = Manifest{Platform: platforms[i], Descriptor: d, Raw: raws[j]}
	}
	return out, nil
}

// walker is one walk's reads.
type walker struct {
	top   v1.Hash
	get   Getter
	reads atomic.Int64
}

// read checks desc, counts the read against maxReads, gets the blob and
// checks its size against desc's.
func (w *walker) read(parent v1.Hash, desc v1.Descriptor, config bool) ([]byte, error) {
	if err := checkDescriptor(parent, desc); err != nil {
		return nil, err
	}
	if w.reads.Add(1) > maxReads {
		return nil, fmt.Errorf("%s reaches more than %d manifests and configs", w.top, maxReads)
	}
	b, err := w.get(desc, config)
	if err != nil {
		return nil, err
	}
	if desc.Size > 0 && int64(len(b)) != desc.Size {
		return nil, fmt.Errorf("%s: got %d bytes of %s, its descriptor says %d", parent, len(b), desc.Digest, desc.Size)
	}
	return b, nil
}

// checkDescriptor refuses, before any read, a descriptor in parent whose
// digest is not sha256 or whose size is negative.
func checkDescriptor(parent v1.Hash, d v1.Descriptor) error {
	if err := cache.ValidateDigest(d.Digest); err != nil {
		return fmt.Errorf("%s lists a bad digest: %w", parent, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%s lists %s with a negative size, %d", parent, d.Digest, d.Size)
	}
	return nil
}

func (w *walker) walkAll(raw []byte, top v1.Hash, depth int, out *[]Manifest) error {
	if depth > maxDepth {
		return fmt.Errorf("indexes nested more than %d deep below %s", maxDepth, w.top)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("index %s: %w", top, err)
	}
	for _, desc := range im.Manifests {
		if IsAttestation(desc) || !followable(desc) {
			continue
		}
		b, err := w.read(top, desc, false)
		if errors.Is(err, ErrSkip) {
			continue
		}
		if err != nil {
			return err
		}
		desc.Size = int64(len(b))
		child, err := parse(b)
		if err != nil {
			return fmt.Errorf("%s: %w", desc.Digest, err)
		}
		if child.isIndex() {
			if err := w.walkAll(b, desc.Digest, depth+1, out); err != nil {
				return err
			}
			continue
		}
		if !child.isImage() {
			continue // an artifact, not an image
		}
		key := ""
		if desc.Platform != nil {
			key = PlatformKey(*desc.Platform)
		} else if key, err = w.configPlatform(desc.Digest, child); err != nil {
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

// isImage: the media type is an image manifest's, or there is none (it is
// optional in OCI manifests).
func (n *node) isImage() bool {
	return n.MediaType == "" || n.MediaType.IsImage()
}

// followable reports whether d, listed in an index, may be an image
// manifest or an index: its media type says so, or it has none.
func followable(d v1.Descriptor) bool {
	return d.MediaType == "" || d.MediaType.IsImage() || d.MediaType.IsIndex()
}

// configPlatform names manifest m's platform from its config.
func (w *walker) configPlatform(manifest v1.Hash, m *node) (string, error) {
	if m.Config == nil {
		return "", fmt.Errorf("image manifest %s without a config", manifest)
	}
	b, err := w.read(manifest, *m.Config, true)
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
// skipping attestations, descriptors without a platform and those whose
// media type is neither an image manifest's nor an index's. arm64's
// variant "v8" is its default and matches a descriptor without a variant;
// a want without a variant takes the first descriptor of its OS and
// architecture when none matches exactly. The error for no match lists at
// most 10 of the index's platforms.
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
		if p == nil || IsAttestation(d) || !followable(d) {
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
	return v1.Descriptor{}, fmt.Errorf("no manifest for platform %s (the index has %s)", want, listSome(have, maxListed))
}

// listSome joins the first n of items, each clipped, and says how many
// more there are.
func listSome(items []string, n int) string {
	shown := make([]string, 0, min(n, len(items)))
	for _, s := range items[:min(n, len(items))] {
		shown = append(shown, clip(s))
	}
	list := strings.Join(shown, ", ")
	if more := len(items) - len(shown); more > 0 {
		list += fmt.Sprintf(" … and %d more", more)
	}
	return list
}

// maxClip bounds each string from an index that an error repeats.
const maxClip = 64

// clip shortens s to maxClip bytes and replaces what a terminal would
// interpret, so an error repeats a hostile index's strings harmlessly.
func clip(s string) string {
	if len(s) > maxClip {
		s = strings.ToValidUTF8(s[:maxClip], "") + "…"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsGraphic(r) {
			return r
		}
		return '?'
	}, s)
}

// quote clips and quotes s, "" when it is empty.
func quote(s string) string { return strconv.Quote(clip(s)) }
