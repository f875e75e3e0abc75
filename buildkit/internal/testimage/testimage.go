// Package testimage is internal/testimage for the buildkit tests, failing
// the test instead of returning errors, plus pushing and storing.
package testimage

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/cache"
	base "github.com/buildcache/buildcache/internal/testimage"
)

// Program returns /prog compiled for linux/goarch, built once per test
// binary.
func Program(t testing.TB, goarch string) []byte {
	t.Helper()
	b, err := base.Program(goarch)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Index returns an OCI image index with one image per platform
// ("linux/amd64", "linux/arm64"), each holding /prog for its platform
// in a single gzip layer.
func Index(t testing.TB, platforms ...string) v1.ImageIndex {
	t.Helper()
	idx, err := base.Index(platforms)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// Push writes idx to ref ("127.0.0.1:port/base:v1") over plain HTTP and
// returns the index digest.
func Push(t testing.TB, ref string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(context.Background())); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Store writes idx, its manifests, configs and layers into store, the
// way a resolver would have, and returns the index digest. It does not
// touch the store's index.json.
func Store(t testing.TB, store cache.LayerCache, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ctx := context.Background()
	put := func(d v1.Hash, b []byte) {
		if err := store.Put(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatalf("storing %s: %v", d, err)
		}
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			d, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			put(d, b)
		}
		cfgName, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		put(cfgName, cfg)
		raw, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		put(desc.Digest, raw)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	put(d, raw)
	return d
}
