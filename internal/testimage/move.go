package testimage

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/cache"
)

// Push writes idx to ref ("127.0.0.1:port/base:v1") over plain HTTP and
// returns the index digest.
func Push(ctx context.Context, ref string, idx v1.ImageIndex) (v1.Hash, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx)); err != nil {
		return v1.Hash{}, fmt.Errorf("testimage: pushing %s: %w", ref, err)
	}
	return idx.Digest()
}

// Store writes idx, its manifests, configs and layers into store, the way
// a resolver would have, and returns the index digest. It does not touch
// the store's index of roots.
func Store(ctx context.Context, store cache.Putter, idx v1.ImageIndex) (v1.Hash, error) {
	put := func(d v1.Hash, b []byte) error {
		if err := store.Put(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
			return fmt.Errorf("testimage: storing %s: %w", d, err)
		}
		return nil
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return v1.Hash{}, err
		}
		if err := storeImage(img, desc.Digest, put); err != nil {
			return v1.Hash{}, err
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	d, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	return d, put(d, raw)
}

// storeImage puts img's layers, config and manifest (under digest m).
func storeImage(img v1.Image, m v1.Hash, put func(v1.Hash, []byte) error) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if err := put(d, b); err != nil {
			return err
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := put(cfgName, cfg); err != nil {
		return err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	return put(m, raw)
}
