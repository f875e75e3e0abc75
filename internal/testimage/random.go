package testimage

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// RandomIndex returns an image index with one random image per platform
// ("linux/amd64", "linux/arm64/v8"), each of layers random layers of
// layerSize bytes followed by the shared layers, with a config naming its
// platform (os, architecture, variant) as a registry's images have. It is
// for tests that move images about and never run them; Index makes images
// that run.
func RandomIndex(platforms []string, layerSize int64, layers int, shared ...v1.Layer) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, plat := range platforms {
		p, err := v1.ParsePlatform(plat)
		if err != nil {
			return nil, fmt.Errorf("testimage: platform %q: %w", plat, err)
		}
		img, err := random.Image(layerSize, int64(layers))
		if err != nil {
			return nil, err
		}
		if len(shared) > 0 {
			if img, err = mutate.AppendLayers(img, shared...); err != nil {
				return nil, err
			}
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	return mutate.AppendManifests(empty.Index, adds...), nil
}
