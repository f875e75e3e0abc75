package localfs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// BenchmarkViewMemory reports the heap an eviction's view of the store
// (scan: digest, size and last use of every blob) holds per blob, from
// runtime.MemStats before and after building it, with it still alive:
//
//	go test -run '^$' -bench ViewMemory -benchtime 1x ./localfs/
func BenchmarkViewMemory(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("blobs=%d", n), func(b *testing.B) {
			s, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			data := make([]byte, 64)
			for i := range n {
				binary.LittleEndian.PutUint64(data, uint64(i))
				sum := sha256.Sum256(data)
				if err := os.WriteFile(filepath.Join(s.blobDir, hex.EncodeToString(sum[:])), data, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			var held float64
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				blobs, _, err := s.scan(context.Background())
				if err != nil || len(blobs) != n {
					b.Fatalf("scan: %d blobs, %v", len(blobs), err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				held = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
				runtime.KeepAlive(blobs)
			}
			b.ReportMetric(held, "held-B/blob")
		})
	}
}
