package buildkit

import (
	"encoding/json"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// This walk is the one registry's resolver has too; buildkit will use
// that one once registry exports it.

// platformManifests walks from an OCI layout's index.json (or any index)
// down to the image manifests and names each by its platform, taken from
// the index descriptor or, failing that, from the image config.
// Attestation manifests (platform unknown/unknown) are left out.
func platformManifests(top []byte, get func(d v1.Hash, config bool) ([]byte, error)) (map[string]v1.Hash, error) {
	out := map[string]v1.Hash{}
	var walk func(raw []byte, depth int) error
	walk = func(raw []byte, depth int) error {
		if depth > 4 {
			return errors.New("indexes nested too deep")
		}
		var n ociNode
		if err := json.Unmarshal(raw, &n); err != nil {
			return err
		}
		for _, desc := range n.Manifests {
			if desc.Annotations["vnd.docker.reference.type"] != "" {
				continue // an attestation manifest
			}
			b, err := get(desc.Digest, false)
			if err != nil {
				return err
			}
			var child ociNode
			if err := json.Unmarshal(b, &child); err != nil {
				return fmt.Errorf("%s: %w", desc.Digest, err)
			}
			if child.Config == nil { // an index
				if err := walk(b, depth+1); err != nil {
					return err
				}
				continue
			}
			p := desc.Platform
			if p == nil {
				cb, err := get(child.Config.Digest, true)
				if err != nil {
					return err
				}
				var cfg ociNode
				if err := json.Unmarshal(cb, &cfg); err != nil {
					return fmt.Errorf("config %s: %w", child.Config.Digest, err)
				}
				p = &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
			}
			if p.OS == "unknown" {
				continue
			}
			key := p.OS + "/" + p.Architecture
			if p.Variant != "" {
				key += "/" + p.Variant
			}
			out[key] = desc.Digest
		}
		return nil
	}
	if err := walk(top, 0); err != nil {
		return nil, err
	}
	return out, nil
}
