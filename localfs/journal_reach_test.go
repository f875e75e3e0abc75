package localfs_test

import (
	"bytes"
	"errors"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
)

// TestJournalledRootIsReachable: a root recorded through the root journal
// (RecordRoot), which leaves index.json as it was, protects its image at
// once from a collector that had cached reachability before it: the cache
// is keyed on the roots' generation, not on index.json alone.
func TestJournalledRootIsReachable(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	putRandomImage(t, s, 1024, 1, "example.com/first:v1")
	if _, err := s.GC(ctx, localfs.GCMaxBytes(1)); err != nil { // caches what the roots reach
		t.Fatal(err)
	}

	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	var blobs []v1.Hash
	put := func(d v1.Hash, b []byte) {
		if err := s.Put(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, d)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		rc, _ := l.Compressed()
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		put(d, buf.Bytes())
	}
	cfg, _ := img.RawConfigFile()
	cfgName, _ := img.ConfigName()
	put(cfgName, cfg)
	raw, _ := img.RawManifest()
	md, _ := img.Digest()
	mt, _ := img.MediaType()
	put(md, raw)
	if err := s.RecordRoot(ctx, v1.Descriptor{MediaType: mt, Digest: md, Size: int64(len(raw)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": "example.com/second:v1"}}); err != nil {
		t.Fatal(err)
	}

	if _, err := s.GC(ctx, localfs.GCMaxBytes(1)); err != nil {
		t.Fatal(err)
	}
	for _, d := range blobs {
		if _, err := s.Stat(ctx, d); errors.Is(err, cache.ErrNotFound) {
			t.Errorf("GC removed %s of the journalled root", d)
		} else if err != nil {
			t.Fatal(err)
		}
	}
}
