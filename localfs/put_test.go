package localfs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// deferredStore is a Store whose Put is PutDeferred, so the conformance
// suite checks that a deferred Put keeps every rule a Put keeps.
type deferredStore struct{ *localfs.Store }

func (s deferredStore) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	return s.PutDeferred(ctx, d, size, r)
}

func TestConformancePutDeferred(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) cache.LayerCache { return deferredStore{newStore(t)} },
		cachetest.WithCorrupter(func(t *testing.T, c cache.LayerCache, d v1.Hash, how cachetest.Corruption) {
			corrupt(t, c.(deferredStore).Store, d, how)
		}),
		cachetest.WithoutLargeBlob("covered by TestConformance: the write path is Put's"))
}

func TestSyncBlobs(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	var blobs []cachetest.Blob
	for i := range 3 {
		b := cachetest.NewBlob(uint64(i), 4096)
		blobs = append(blobs, b)
		if err := s.PutDeferred(ctx, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SyncBlobs(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		rc, err := s.Get(ctx, b.Digest)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, b.Data) {
			t.Fatalf("Get %s after SyncBlobs: %d bytes, %v", b.Digest, len(got), err)
		}
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.SyncBlobs(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("SyncBlobs with a cancelled context = %v, want context.Canceled", err)
	}
}
