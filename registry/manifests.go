package registry

import (
	"bytes"
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/imagewalk"
)

// platformManifest is one platform's manifest and the blobs it needs.
type platformManifest struct {
	platform string
	desc     v1.Descriptor
	raw      []byte
	blobs    []v1.Descriptor // config, then layers
}

func manifestMap(pms []platformManifest) map[string]v1.Hash {
	m := make(map[string]v1.Hash, len(pms))
	for _, pm := range pms {
		m[pm.platform] = pm.desc.Digest
	}
	return m
}

// platformManifests interprets raw, the manifest or index top, and returns
// the requested platforms' manifests (see imagewalk.Walk), reading
// children and a single-platform image's config with get.
func (r *Resolver) platformManifests(top v1.Hash, raw []byte, platforms []string, get imagewalk.Getter) ([]platformManifest, error) {
	// A single-platform image's sizes are checked before the walk reads
	// its config, so that a bad one is refused before any request.
	if m, err := v1.ParseManifest(bytes.NewReader(raw)); err == nil && m.Config.Digest != (v1.Hash{}) {
		if _, err := parseManifest(v1.Descriptor{Digest: top}, raw); err != nil {
			return nil, err
		}
	}
	found, err := imagewalk.Walk(raw, top, platforms, func(d v1.Descriptor, config bool) ([]byte, error) {
		b, err := get(d, config)
		if err != nil {
			return nil, readErr{err}
		}
		return b, nil
	})
	if re, ok := err.(readErr); ok {
		return nil, re.error // the store's or the registry's, as it was
	}
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	out := make([]platformManifest, len(found))
	for i, m := range found {
		if out[i], err = parseManifest(m.Descriptor, m.Raw); err != nil {
			return nil, err
		}
		out[i].platform = m.Platform
	}
	return out, nil
}

// storedGetter reads what a walk needs from the store alone.
func (r *Resolver) storedGetter(ctx context.Context) imagewalk.Getter {
	return func(d v1.Descriptor, config bool) ([]byte, error) {
		if config {
			return r.readBlob(ctx, d.Digest, maxConfigBytes)
		}
		return r.readBlob(ctx, d.Digest, cache.MaxManifestBytes)
	}
}

// readErr marks an error of the reads platformManifests hands to
// imagewalk.Walk, which returns them unwrapped.
type readErr struct{ error }

func parseManifest(desc v1.Descriptor, raw []byte) (platformManifest, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return platformManifest{}, fmt.Errorf("registry: manifest %s: %w", desc.Digest, err)
	}
	if err := cache.ValidateDigest(m.Config.Digest); err != nil {
		return platformManifest{}, fmt.Errorf("registry: manifest %s config: %w", desc.Digest, err)
	}
	if err := checkBlobSize("config", m.Config, maxConfigBytes); err != nil {
		return platformManifest{}, fmt.Errorf("registry: manifest %s: %w", desc.Digest, err)
	}
	pm := platformManifest{desc: desc, raw: raw, blobs: append([]v1.Descriptor{m.Config}, m.Layers...)}
	for _, l := range m.Layers {
		if err := cache.ValidateDigest(l.Digest); err != nil {
			return platformManifest{}, fmt.Errorf("registry: manifest %s layer: %w", desc.Digest, err)
		}
		if err := checkBlobSize("layer", l, maxBlobBytes); err != nil {
			return platformManifest{}, fmt.Errorf("registry: manifest %s: %w", desc.Digest, err)
		}
		if len(l.URLs) > 0 {
			return platformManifest{}, fmt.Errorf("registry: manifest %s has a foreign layer %s, which buildcache does not fetch", desc.Digest, l.Digest)
		}
	}
	return pm, nil
}

// checkBlobSize refuses, before any request, a blob whose descriptor
// states a negative size or one above limit: the download is bounded by
// the stated size, so that size must be sane.
func checkBlobSize(kind string, d v1.Descriptor, limit int64) error {
	if d.Size < 0 {
		return fmt.Errorf("%s %s has a negative size, %d", kind, d.Digest, d.Size)
	}
	if d.Size > limit {
		return fmt.Errorf("%s %s claims %d bytes, more than the %d a %s may have", kind, d.Digest, d.Size, limit, kind)
	}
	return nil
}

func parsePlatform(s string) (*v1.Platform, error) {
	p, err := imagewalk.ParsePlatform(s)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
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
