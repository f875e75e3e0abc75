package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

// Image serves one platform of a resolved image from the store, with no
// network: its manifest, config and layers are read, verified, from the
// store. The layers' reads use ctx.
func (r *Resolver) Image(ctx context.Context, res *cache.ResolvedImage, platform string) (v1.Image, error) {
	if res == nil {
		return nil, fmt.Errorf("registry: Image: nil ResolvedImage")
	}
	d, ok := res.Manifests[platform]
	if !ok {
		have := make([]string, 0, len(res.Manifests))
		for p := range res.Manifests {
			have = append(have, p)
		}
		slices.Sort(have)
		return nil, fmt.Errorf("registry: %s was not resolved for %s (resolved: %v): %w", res.Ref, platform, have, cache.ErrNotFound)
	}
	raw, err := r.readBlob(ctx, d, cache.MaxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("registry: %s %s manifest: %w", res.Ref, platform, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("registry: %s %s manifest %s: %w", res.Ref, platform, d, err)
	}
	cfg, err := r.readBlob(ctx, m.Config.Digest, maxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("registry: %s %s config: %w", res.Ref, platform, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.DockerManifestSchema2
	}
	return partial.CompressedToImage(&storeImage{ctx: ctx, store: r.store, manifest: m, raw: raw, config: cfg, mediaType: mt})
}

type storeImage struct {
	ctx       context.Context
	store     cache.LayerCache
	manifest  *v1.Manifest
	raw       []byte
	config    []byte
	mediaType types.MediaType
}

func (i *storeImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *storeImage) MediaType() (types.MediaType, error) { return i.mediaType, nil }
func (i *storeImage) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *storeImage) Manifest() (*v1.Manifest, error)     { return i.manifest, nil }
func (i *storeImage) ConfigName() (v1.Hash, error)        { return i.manifest.Config.Digest, nil }
func (i *storeImage) ConfigLayer() (v1.Layer, error) {
	return nil, fmt.Errorf("registry: config is not a layer")
}
func (i *storeImage) Descriptor() (*v1.Descriptor, error) { return nil, nil }
func (i *storeImage) Digest() (v1.Hash, error) {
	d, _, err := v1.SHA256(bytes.NewReader(i.raw))
	return d, err
}
func (i *storeImage) Size() (int64, error) { return int64(len(i.raw)), nil }
func (i *storeImage) layerDesc(h v1.Hash) (*v1.Descriptor, bool) {
	for _, l := range i.manifest.Layers {
		if l.Digest == h {
			return &l, true
		}
	}
	return nil, false
}

func (i *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.manifest.Config.Digest {
		return &storeLayer{img: i, desc: i.manifest.Config}, nil
	}
	d, ok := i.layerDesc(h)
	if !ok {
		return nil, fmt.Errorf("registry: layer %s is not in the manifest: %w", h, cache.ErrNotFound)
	}
	return &storeLayer{img: i, desc: *d}, nil
}

type storeLayer struct {
	img  *storeImage
	desc v1.Descriptor
}

func (l *storeLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *storeLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *storeLayer) Compressed() (io.ReadCloser, error) {
	return l.img.store.Get(l.img.ctx, l.desc.Digest)
}

// Prune drops the records of references not resolved for longer than
// olderThan, so GC can reclaim the blobs no other root shares. It returns
// the references dropped. What describes an image (its signatures and
// referrers, roots marked cache.AnnotationSubject) is not dropped for
// its age: it goes once its image is gone, neither a root any more nor
// in the store (a collector does not keep it once its image is not).
func (r *Resolver) Prune(ctx context.Context, olderThan time.Duration) ([]string, error) {
	cutoff := r.o.now().Add(-olderThan)
	gone, err := r.subjectsGone(ctx)
	if err != nil {
		return nil, err
	}
	var dropped []string
	err = r.index.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		dropped = nil
		im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool {
			ref, ok := d.Annotations[cache.AnnotationRefName]
			at, err := time.Parse(time.RFC3339Nano, d.Annotations[cache.AnnotationResolvedAt])
			if _, describes := d.Annotations[cache.AnnotationSubject]; describes || !ok || err != nil || !at.Before(cutoff) {
				return false
			}
			dropped = append(dropped, ref)
			return true
		})
		roots := map[string]bool{}
		for _, d := range im.Manifests {
			roots[d.Digest.String()] = true
		}
		im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool {
			subject, ok := d.Annotations[cache.AnnotationSubject]
			if !ok || roots[subject] || !gone[subject] {
				return false
			}
			dropped = append(dropped, d.Annotations[cache.AnnotationRefName])
			return true
		})
		return nil
	})
	return dropped, err
}

// subjectsGone lists the subjects of the roots that describe an image
// (cache.AnnotationSubject) that are not in the store: one Stat each,
// before the index is locked for Prune's update.
func (r *Resolver) subjectsGone(ctx context.Context) (map[string]bool, error) {
	im, err := r.index.Index(ctx)
	if err != nil {
		return nil, err
	}
	gone := map[string]bool{}
	for _, d := range im.Manifests {
		s, ok := d.Annotations[cache.AnnotationSubject]
		if !ok {
			continue
		}
		if h, err := v1.NewHash(s); err != nil {
			gone[s] = true
		} else if _, err := r.store.Stat(ctx, h); errors.Is(err, cache.ErrNotFound) {
			gone[s] = true
		}
	}
	return gone, nil
}
