package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

// footprint is what one recorded image occupies in the store.
type footprint struct {
	Platforms []string // platforms whose manifests are stored
	Blobs     int      // distinct blobs stored: index, manifests, configs, layers
	Bytes     int64    // their size
	Missing   int      // blobs that stored manifests reference but that are absent
	Err       error    // a manifest or config that could not be read
}

// err says why the image is not usable from the store, or nil.
func (fp footprint) err(ref string) error {
	if fp.Err != nil {
		return fmt.Errorf("%s: %w", ref, fp.Err)
	}
	if fp.Missing > 0 {
		return fmt.Errorf("%s: %d blobs are not in the cache: %w", ref, fp.Missing, cache.ErrNotFound)
	}
	return nil
}

type blobStore interface {
	cache.Stater
	cache.Getter
}

// footprintOf walks the image whose index or manifest is top, with no
// network. With only set, it counts just those platform manifests (and
// the top), and an absent one is missing; without, it counts every
// platform manifest that is stored.
func footprintOf(ctx context.Context, store blobStore, top v1.Hash, only map[string]v1.Hash) footprint {
	var fp footprint
	seen := map[v1.Hash]bool{}
	count := func(d v1.Hash) bool {
		if seen[d] {
			return true
		}
		seen[d] = true
		size, err := store.Stat(ctx, d)
		if err != nil {
			if errors.Is(err, cache.ErrNotFound) {
				fp.Missing++
			} else if fp.Err == nil {
				fp.Err = err
			}
			return false
		}
		fp.Blobs++
		fp.Bytes += size
		return true
	}
	read := func(d v1.Hash, into any) bool {
		rc, err := store.Get(ctx, d)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(io.LimitReader(rc, cache.MaxManifestBytes))
			rc.Close()
			if err == nil {
				err = json.Unmarshal(b, into)
			}
		}
		if err != nil && fp.Err == nil {
			fp.Err = fmt.Errorf("reading %s: %w", d, err)
		}
		return err == nil
	}
	wanted := map[v1.Hash]bool{}
	for _, d := range only {
		wanted[d] = true
	}
	// manifest counts a platform manifest's config and layers and returns
	// its platform according to the config.
	manifest := func(d v1.Hash, needPlatform bool) string {
		var m v1.Manifest
		if !read(d, &m) || cache.ValidateDigest(m.Config.Digest) != nil {
			return "" // not an image manifest: nothing more to count
		}
		platform := ""
		if count(m.Config.Digest) && needPlatform {
			var cf struct{ OS, Architecture, Variant string }
			if read(m.Config.Digest, &cf) && cf.OS != "" && cf.Architecture != "" {
				platform = (&v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}).String()
			}
		}
		for _, l := range m.Layers {
			count(l.Digest)
		}
		return platform
	}

	if !count(top) {
		return fp
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	if !read(top, &probe) {
		return fp
	}
	if !probe.MediaType.IsIndex() && probe.Manifests == nil {
		if p := manifest(top, true); p != "" {
			fp.Platforms = append(fp.Platforms, p)
		}
		return fp
	}
	for _, child := range probe.Manifests {
		if only != nil && !wanted[child.Digest] {
			continue
		}
		if only == nil {
			if _, err := store.Stat(ctx, child.Digest); errors.Is(err, cache.ErrNotFound) {
				continue // a platform nobody asked for
			}
		}
		if !count(child.Digest) {
			continue
		}
		p := manifest(child.Digest, child.Platform == nil)
		if child.Platform != nil {
			p = child.Platform.String()
		}
		if p != "" {
			fp.Platforms = append(fp.Platforms, p)
		}
	}
	return fp
}
