package cachetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/buildcache/buildcache/cache"
)

// RunIngester checks cache.Ingester: what is written is read back with
// ReadAt while the blob is written, concurrently, and after Commit; a
// committed blob is stored, of a known or an unknown size; wrong bytes,
// too few, too many, an ingestion closed or whose context ends before its
// Commit store nothing, and the digest can be ingested again afterwards.
// newCache must return a new, empty store each time.
func RunIngester(t *testing.T, newCache func(t *testing.T) cache.LayerCache) {
	open := func(t *testing.T) (cache.LayerCache, cache.Ingester) {
		return openAs[cache.Ingester](t, newCache)
	}
	for _, size := range []string{"KnownSize", "UnknownSize"} {
		t.Run("RoundTrip"+size, func(t *testing.T) {
			c, ing := open(t)
			b := NewBlob(501, 300<<10)
			n := int64(len(b.Data))
			if size == "UnknownSize" {
				n = -1
			}
			in, err := ing.Ingest(ctxT(t), b.Digest, n)
			if err != nil {
				t.Fatalf("Ingest: %v", err)
			}
			defer in.Close()
			for off := 0; off < len(b.Data); off += 64 << 10 {
				chunk := b.Data[off:min(off+64<<10, len(b.Data))]
				if _, err := in.Write(chunk); err != nil {
					t.Fatalf("Write at %d: %v", off, err)
				}
				readBack(t, in, b.Data[:off+len(chunk)], "while writing")
			}
			if err := in.Commit(ctxT(t)); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			readBack(t, in, b.Data, "after Commit")
			if err := in.Close(); err != nil {
				t.Fatalf("Close after Commit: %v", err)
			}
			if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
				t.Fatal("the committed blob reads back wrong")
			}
		})
	}
	t.Run("ConcurrentReaders", func(t *testing.T) {
		c, ing := open(t)
		b := NewBlob(502, 1<<20)
		in, err := ing.Ingest(ctxT(t), b.Digest, int64(len(b.Data)))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		var mu sync.Mutex
		more := sync.NewCond(&mu)
		written := 0
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				buf := make([]byte, 4<<10)
				for pos := 0; pos < len(b.Data); {
					mu.Lock()
					for written <= pos {
						more.Wait()
					}
					hi := written
					mu.Unlock()
					k, err := in.ReadAt(buf[:min(len(buf), hi-pos)], int64(pos))
					if err != nil || !bytes.Equal(buf[:k], b.Data[pos:pos+k]) {
						t.Errorf("ReadAt(%d) = %d, %v, or the wrong bytes", pos, k, err)
						return
					}
					pos += k
				}
			})
		}
		for off := 0; off < len(b.Data); off += 16 << 10 {
			if _, err := in.Write(b.Data[off : off+16<<10]); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			written = off + 16<<10
			more.Broadcast()
			mu.Unlock()
		}
		wg.Wait()
		if err := in.Commit(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
			t.Fatal("the committed blob reads back wrong")
		}
	})
	t.Run("Refused", func(t *testing.T) {
		b, other := NewBlob(503, 100<<10), NewBlob(504, 100<<10)
		n := int64(len(b.Data))
		for _, tc := range []struct {
			name string
			size int64
			data []byte
		}{
			{"WrongBytes", n, other.Data},
			{"WrongBytesUnknownSize", -1, other.Data},
			{"TooFew", n, b.Data[:n-1]},
			{"TooMany", n - 1, b.Data},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c, ing := open(t)
				in, err := ing.Ingest(ctxT(t), b.Digest, tc.size)
				if err != nil {
					t.Fatal(err)
				}
				defer in.Close()
				_, werr := in.Write(tc.data)
				cerr := in.Commit(ctxT(t))
				if !errors.Is(werr, cache.ErrDigestMismatch) && !errors.Is(cerr, cache.ErrDigestMismatch) {
					t.Fatalf("Write = %v, Commit = %v; want ErrDigestMismatch from one", werr, cerr)
				}
				expectAbsent(t, c, b.Digest)
				ingestAgain(t, c, ing, b)
			})
		}
		t.Run("InvalidDigest", func(t *testing.T) {
			_, ing := open(t)
			for _, bad := range InvalidDigests[:3] {
				if in, err := ing.Ingest(ctxT(t), bad, 1); !errors.Is(err, cache.ErrInvalidDigest) {
					if err == nil {
						in.Close()
					}
					t.Errorf("Ingest(%q) = %v, want ErrInvalidDigest", bad, err)
				}
			}
		})
	})
	t.Run("CloseAborts", func(t *testing.T) {
		c, ing := open(t)
		b := NewBlob(505, 200<<10)
		in, err := ing.Ingest(ctxT(t), b.Digest, int64(len(b.Data)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Write(b.Data[:100<<10]); err != nil {
			t.Fatal(err)
		}
		if err := in.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := in.Close(); err != nil {
			t.Fatalf("a second Close: %v", err)
		}
		if _, err := in.Write(b.Data[100<<10:]); err == nil {
			if err := in.Commit(ctxT(t)); err == nil {
				t.Fatal("an ingestion closed before its Commit was committed")
			}
		}
		expectAbsent(t, c, b.Digest)
		ingestAgain(t, c, ing, b)
	})
	t.Run("CancelAborts", func(t *testing.T) {
		c, ing := open(t)
		b := NewBlob(506, 200<<10)
		ctx, cancel := context.WithCancel(ctxT(t))
		in, err := ing.Ingest(ctx, b.Digest, int64(len(b.Data)))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		if _, err := in.Write(b.Data[:100<<10]); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := in.Write(b.Data[100<<10:]); err == nil {
			if err := in.Commit(ctxT(t)); err == nil {
				t.Fatal("an ingestion whose context ended before its Commit was committed")
			}
		}
		expectAbsent(t, c, b.Digest)
		ingestAgain(t, c, ing, b)
	})
}

// readBack checks that in's first len(want) bytes are want.
func readBack(t *testing.T, in cache.Ingestion, want []byte, when string) {
	t.Helper()
	got := make([]byte, len(want))
	if n, err := in.ReadAt(got, 0); n != len(want) {
		t.Fatalf("ReadAt %s: %d of %d bytes, %v", when, n, len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("ReadAt %s reads other bytes than were written", when)
	}
}

// ingestAgain ingests b whole, after an ingestion of it failed.
func ingestAgain(t *testing.T, c cache.LayerCache, ing cache.Ingester, b Blob) {
	t.Helper()
	in, err := ing.Ingest(ctxT(t), b.Digest, int64(len(b.Data)))
	if err != nil {
		t.Fatalf("Ingest after a failed one: %v", err)
	}
	defer in.Close()
	if _, err := in.Write(b.Data); err != nil {
		t.Fatalf("Write after a failed ingestion: %v", err)
	}
	if err := in.Commit(ctxT(t)); err != nil {
		t.Fatalf("Commit after a failed ingestion: %v", err)
	}
	if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("the blob ingested again reads back wrong")
	}
}
