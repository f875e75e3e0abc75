package registry

import (
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func parsePlatform(s string) (*v1.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil || s == "" || p.OS == "" || p.Architecture == "" {
		return nil, fmt.Errorf("registry: invalid platform %q: want os/arch[/variant]", s)
	}
	return p, nil
}

// normalizePlatforms drops duplicates and sorts nothing: callers' keys
// stay as they spelled them.
func normalizePlatforms(ps []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// pickPlatform finds the manifest for want in an index. arm64's variant
// "v8" is its default and matches a descriptor without a variant.
func pickPlatform(im *v1.IndexManifest, want string) (v1.Descriptor, error) {
	wp, err := parsePlatform(want)
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
		if p == nil || p.OS == "unknown" { // attestations and the like
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
