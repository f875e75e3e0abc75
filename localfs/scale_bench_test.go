package localfs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/localfs"
)

// scaleBlobSize is the size of every blob in the scale benchmarks: small,
// so that 100,000 of them take 400 MiB and a few seconds to make, and so
// that what is measured is the per-blob bookkeeping, not moving bytes.
const scaleBlobSize = 4 << 10

// scaleSizes are the store sizes, in blobs, of the scale benchmarks.
var scaleSizes = []int{1_000, 10_000, 100_000}

// scaleBlob returns blob i of a benchmark: scaleBlobSize bytes that differ
// from every other i's, and their digest.
func scaleBlob(seed string, i int) ([]byte, v1.Hash) {
	data := make([]byte, scaleBlobSize)
	copy(data, seed)
	binary.LittleEndian.PutUint64(data[len(seed):], uint64(i))
	sum := sha256.Sum256(data)
	return data, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// fillStore makes a store in dir holding n blobs, written straight into
// blobs/sha256 (no fsync), which is what a long-lived store looks like to
// the next process that opens it, in a fraction of the time n Puts take.
func fillStore(tb testing.TB, dir string, n int) {
	tb.Helper()
	s, err := localfs.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	blobDir := filepath.Join(s.Dir(), "blobs", "sha256")
	for i := range n {
		data, d := scaleBlob("fill", i)
		if err := os.WriteFile(filepath.Join(blobDir, d.Hex), data, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkPutAtBudget measures a durable 4 KiB Put into a store of n
// blobs whose byte budget (WithMaxBytes) they fill exactly, so that the
// store must evict to take each new blob, against the same Put into the
// same store without a budget. The amortized cost is what a run of many
// Puts shows, so give it enough ops to cover eviction batches (a batch at
// the default low-water mark is a tenth of the budget, n/10 Puts here):
//
//	go test -run '^$' -bench PutAtBudget -benchtime 20000x -timeout 30m ./localfs/
func BenchmarkPutAtBudget(b *testing.B) {
	ctx := context.Background()
	for _, n := range scaleSizes {
		dir := b.TempDir()
		fillStore(b, dir, n)
		budget := int64(n) * scaleBlobSize
		next := 0 // blobs Put so far, across runs: each Put is of a new blob
		for _, bc := range []struct {
			name string
			opts []localfs.Option
		}{
			{"under-budget", nil},
			{"at-budget", []localfs.Option{localfs.WithMaxBytes(budget)}},
		} {
			b.Run(fmt.Sprintf("blobs=%d/%s", n, bc.name), func(b *testing.B) {
				s, err := localfs.Open(dir, bc.opts...)
				if err != nil {
					b.Fatal(err)
				}
				evictions := s.Stats().Evictions
				b.SetBytes(scaleBlobSize)
				b.ResetTimer()
				for range b.N {
					data, d := scaleBlob("put", next)
					next++
					if err := s.Put(ctx, d, scaleBlobSize, bytes.NewReader(data)); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(s.Stats().Evictions-evictions)/float64(b.N), "evictions/op")
				if bc.opts == nil {
					// Give the at-budget run a store that fills its
					// budget exactly again: drop what this run added.
					for i := next - b.N; i < next; i++ {
						_, d := scaleBlob("put", i)
						if err := s.Delete(ctx, d); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkScale measures GC, Verify and Walk over stores of n blobs, and
// the heap they allocate per blob (alloc-B/blob): an operation that kept
// per-blob data for the whole store shows it there.
//
//	go test -run '^$' -bench Scale -benchtime 3x -timeout 30m ./localfs/
func BenchmarkScale(b *testing.B) {
	ctx := context.Background()
	for _, n := range scaleSizes {
		dir := b.TempDir()
		fillStore(b, dir, n)
		s, err := localfs.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		for _, op := range []struct {
			name string
			run  func() error
		}{
			{"walk", func() error {
				return s.Walk(ctx, func(v1.Hash, int64) error { return nil })
			}},
			{"gc", func() error { _, err := s.GC(ctx); return err }},
			{"verify", func() error { _, err := s.Verify(ctx); return err }},
		} {
			b.Run(fmt.Sprintf("blobs=%d/%s", n, op.name), func(b *testing.B) {
				b.ReportAllocs()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for b.Loop() {
					if err := op.run(); err != nil {
						b.Fatal(err)
					}
				}
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/float64(n), "alloc-B/blob")
			})
		}
	}
}
