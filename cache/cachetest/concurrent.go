package cachetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/buildcache/buildcache/cache"
)

func (s *suite) testConcurrentSamePut(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(10, 1<<20)
	var wg sync.WaitGroup
	errs := make([]error, s.cfg.concurrency)
	start := make(chan struct{})
	for i := range s.cfg.concurrency {
		wg.Go(func() {
			<-start
			errs[i] = c.Put(ctxT(t), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put #%d of %d concurrent Puts: %v", i, len(errs), err)
		}
	}
	if got := walkAll(t, c); len(got) != 1 {
		t.Fatalf("after %d concurrent Puts of one blob, Walk lists %d entries", len(errs), len(got))
	}
	if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("concurrent Puts stored other bytes")
	}
}

func (s *suite) testConcurrentMixed(t *testing.T) {
	c := s.newCache(t)
	blobs := make([]Blob, s.cfg.mixedBlobs)
	for i := range blobs {
		blobs[i] = NewBlob(1000+uint64(i), 1000+i*513)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for range s.cfg.mixedRounds / 8 {
				b := blobs[r.IntN(len(blobs))]
				var err error
				switch r.IntN(4) {
				case 0, 1:
					err = c.Put(ctxT(t), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data))
				case 2:
					var rc io.ReadCloser
					rc, err = c.Get(ctxT(t), b.Digest)
					if err == nil {
						var got []byte
						got, err = io.ReadAll(rc)
						rc.Close()
						// A Delete racing with a read may end the read early
						// with ErrNotFound; it must never yield other bytes.
						if err == nil && !bytes.Equal(got, b.Data) {
							err = fmt.Errorf("Get(%s) returned wrong bytes", b.Digest)
						}
					}
				case 3:
					err = c.Delete(ctxT(t), b.Digest)
				}
				if err != nil && !errors.Is(err, cache.ErrNotFound) {
					select {
					case errc <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for d := range walkAll(t, c) {
		found := false
		for _, b := range blobs {
			if b.Digest == d {
				found = true
				if got := mustGet(t, c, d); !bytes.Equal(got, b.Data) {
					t.Errorf("%s: wrong bytes after concurrent use", d)
				}
			}
		}
		if !found {
			t.Errorf("Walk lists %s, which was never put", d)
		}
	}
}
