package localfs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"testing/iotest"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// benchBlobSize is the blob size of BenchmarkGet and BenchmarkPut: large
// enough that per-call setup (open, stat, rename, fsync of the directory)
// is small next to moving and hashing the bytes.
const benchBlobSize = 64 << 20

// benchBlob returns benchBlobSize bytes of incompressible data.
func benchBlob(b *testing.B) []byte {
	b.Helper()
	data := make([]byte, benchBlobSize)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(data)
	return data
}

// BenchmarkGet measures a verified read of a stored blob against what a
// verified read cannot beat: hashing the same bytes already in memory
// (raw-sha256). read-unverified, reading the file without hashing, shows
// what the I/O alone costs. Run the three together and compare throughput.
func BenchmarkGet(b *testing.B) {
	data := benchBlob(b)
	d := cachetest.Digest(data)
	ctx := context.Background()
	s, err := localfs.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(s.Dir(), "blobs", "sha256", d.Hex)

	b.Run("localfs-verified", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			rc, err := s.Get(ctx, d)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			if err != nil || n != int64(len(data)) {
				b.Fatalf("copied %d bytes, err %v", n, err)
			}
			if err := rc.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sha256.Sum256(data) // b.Loop keeps the call from being optimized away
		}
	})
	b.Run("read-unverified", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, f)
			if err != nil || n != int64(len(data)) {
				b.Fatalf("copied %d bytes, err %v", n, err)
			}
			f.Close()
		}
	})
}

// BenchmarkPut measures storing a blob (hash, write, fsync, rename, fsync
// of the directory) against the durable write it cannot beat: writing the
// same bytes to a new file and fsyncing it (writefile-sync). Removing the
// previous iteration's file is not timed in either.
func BenchmarkPut(b *testing.B) {
	data := benchBlob(b)
	d := cachetest.Digest(data)
	ctx := context.Background()

	b.Run("localfs", func(b *testing.B) {
		s, err := localfs.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for range b.N {
			if err := s.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			// Put of a stored blob returns at once; delete it so that
			// every iteration writes.
			if err := s.Delete(ctx, d); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("writefile-sync", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "blob")
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for range b.N {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := os.Remove(path); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

// BenchmarkPutGroup stores a group of small blobs (an image's configs and
// manifests, small layers) one durable Put at a time, against PutDeferred
// for each and one SyncBlobs: one directory fsync for the group instead of
// one per blob.
//
//	go test -run '^$' -bench PutGroup -count 3 ./localfs/
func BenchmarkPutGroup(b *testing.B) {
	const n, size = 16, 64 << 10
	blobs := make([]cachetest.Blob, n)
	for i := range blobs {
		blobs[i] = cachetest.NewBlob(uint64(100+i), size)
	}
	ctx := context.Background()
	for _, bc := range []struct {
		name     string
		deferred bool
	}{{"put", false}, {"deferred+sync", true}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := localfs.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(n * size)
			for b.Loop() {
				for _, bl := range blobs {
					put := s.Put
					if bc.deferred {
						put = s.PutDeferred
					}
					if err := put(ctx, bl.Digest, size, bytes.NewReader(bl.Data)); err != nil {
						b.Fatal(err)
					}
				}
				if bc.deferred {
					if err := s.SyncBlobs(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				for _, bl := range blobs {
					if err := s.Delete(ctx, bl.Digest); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
		})
	}
}

// TestPutPipelineEndsCleanly checks the paths out of Put's pipeline (a
// writer and a goroutine hashing behind it) on a blob of several buffers:
// each verdict is right, a failure stores nothing, and no goroutine
// outlives the Put.
func TestPutPipelineEndsCleanly(t *testing.T) {
	data := make([]byte, 8<<20+12345)
	rand.NewChaCha8([32]byte{2}).Read(data)
	d := cachetest.Digest(data)
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 1
	boom := errors.New("reader failed by test")

	tests := []struct {
		name    string
		size    int64
		r       func(cancel context.CancelFunc) io.Reader
		wantErr error // nil: stored
	}{
		{"ok", int64(len(data)), func(context.CancelFunc) io.Reader { return bytes.NewReader(data) }, nil},
		{"ok, size unknown", -1, func(context.CancelFunc) io.Reader { return bytes.NewReader(data) }, nil},
		{"flipped byte", int64(len(data)), func(context.CancelFunc) io.Reader { return bytes.NewReader(flipped) }, cache.ErrDigestMismatch},
		{"flipped byte, size unknown", -1, func(context.CancelFunc) io.Reader { return bytes.NewReader(flipped) }, cache.ErrDigestMismatch},
		{"short", int64(len(data)), func(context.CancelFunc) io.Reader { return bytes.NewReader(data[:len(data)-1]) }, cache.ErrDigestMismatch},
		{"too long", int64(len(data)), func(context.CancelFunc) io.Reader {
			return io.MultiReader(bytes.NewReader(data), bytes.NewReader(data))
		}, cache.ErrDigestMismatch},
		{"reader fails half-way", int64(len(data)), func(context.CancelFunc) io.Reader {
			return io.MultiReader(bytes.NewReader(data[:len(data)/2]), iotest.ErrReader(boom))
		}, boom},
		{"cancelled half-way", int64(len(data)), func(cancel context.CancelFunc) io.Reader {
			return io.MultiReader(bytes.NewReader(data[:len(data)/2]), benchReaderFunc(func([]byte) (int, error) {
				cancel()
				return 0, nil
			}), bytes.NewReader(data[len(data)/2:]))
		}, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			before := runtime.NumGoroutine()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			err := s.Put(ctx, d, tc.size, tc.r(cancel))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Put = %v", err)
				}
				rc, err := s.Get(t.Context(), d)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("Get after Put: %d bytes, equal %v, err %v", len(got), bytes.Equal(got, data), err)
				}
			} else {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Put = %v, want %v", err, tc.wantErr)
				}
				if _, err := s.Stat(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("after a failed Put, Stat = %v, want ErrNotFound", err)
				}
			}
			// Put waits for its hasher's verdict; the goroutine may still
			// be returning when Put does.
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if n := runtime.NumGoroutine(); n > before {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines before Put, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
			}
		})
	}
}

type benchReaderFunc func([]byte) (int, error)

func (f benchReaderFunc) Read(p []byte) (int, error) { return f(p) }
