package cachetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// Corruption is a way of damaging a stored blob from outside the cache.
type Corruption int

const (
	// FlipByte changes one byte in the middle of the blob.
	FlipByte Corruption = iota
	// Truncate cuts the blob short.
	Truncate
)

func (c Corruption) String() string {
	if c == Truncate {
		return "truncate"
	}
	return "flip-byte"
}

// Corrupter damages the stored copy of d behind the cache's back, as a full
// disk, a bad sector or another process would.
type Corrupter func(t *testing.T, c cache.LayerCache, d v1.Hash, how Corruption)

// Option configures Run.
type Option func(*config)

type config struct {
	corrupt     Corrupter
	largeSize   int64
	skipLarge   string
	heapLimit   uint64
	concurrency int
	mixedBlobs  int
	mixedRounds int
}

// WithCorrupter enables the corruption tests for backends whose stored
// bytes can be changed from outside (a directory, a bucket).
func WithCorrupter(f Corrupter) Option { return func(c *config) { c.corrupt = f } }

// WithLargeBlobSize sets the size of the streaming test's blob
// (default 256 MiB).
func WithLargeBlobSize(n int64) Option { return func(c *config) { c.largeSize = n } }

// WithoutLargeBlob skips the streaming test, for backends that hold blobs in
// memory by design. The reason is printed.
func WithoutLargeBlob(reason string) Option { return func(c *config) { c.skipLarge = reason } }

// WithHeapLimit sets the heap growth the streaming test allows
// (default 32 MiB).
func WithHeapLimit(n uint64) Option { return func(c *config) { c.heapLimit = n } }

// Run runs the conformance suite. newCache must return a new, empty cache
// each time it is called; it registers its own cleanup with t.
func Run(t *testing.T, newCache func(t *testing.T) cache.LayerCache, opts ...Option) {
	cfg := config{largeSize: 256 << 20, heapLimit: 32 << 20, concurrency: 64, mixedBlobs: 32, mixedRounds: 400}
	for _, o := range opts {
		o(&cfg)
	}
	s := &suite{cfg: cfg, newCache: newCache}
	t.Run("RoundTrip", s.testRoundTrip)
	t.Run("PutIdempotent", s.testPutIdempotent)
	t.Run("PutWrongBytes", s.testPutWrongBytes)
	t.Run("PutWrongSize", s.testPutWrongSize)
	t.Run("PutReaderError", s.testPutReaderError)
	t.Run("PutCancelledHalfway", s.testPutCancelledHalfway)
	t.Run("NotFound", s.testNotFound)
	t.Run("InvalidDigests", s.testInvalidDigests)
	t.Run("Delete", s.testDelete)
	t.Run("Walk", s.testWalk)
	t.Run("ConcurrentSamePut", s.testConcurrentSamePut)
	t.Run("ConcurrentMixed", s.testConcurrentMixed)
	t.Run("Stats", s.testStats)
	t.Run("Corruption", s.testCorruption)
	t.Run("LargeBlobStreams", s.testLargeBlob)
}

type suite struct {
	cfg      config
	newCache func(t *testing.T) cache.LayerCache
}

// Blob is test content with its digest.
type Blob struct {
	Data   []byte
	Digest v1.Hash
}

// NewBlob returns n pseudo-random bytes derived from seed, and their digest.
func NewBlob(seed uint64, n int) Blob {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return Blob{Data: data, Digest: Digest(data)}
}

// Digest is the sha256 digest of b.
func Digest(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func ctxT(t *testing.T) context.Context { return t.Context() }

func put(t *testing.T, c cache.LayerCache, b Blob) {
	t.Helper()
	if err := c.Put(ctxT(t), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatalf("Put(%s, %d bytes): %v", b.Digest, len(b.Data), err)
	}
}

func mustGet(t *testing.T, c cache.LayerCache, d v1.Hash) []byte {
	t.Helper()
	rc, err := c.Get(ctxT(t), d)
	if err != nil {
		t.Fatalf("Get(%s): %v", d, err)
	}
	got, err := io.ReadAll(rc)
	if err != nil {
		rc.Close()
		t.Fatalf("reading %s: %v", d, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("closing %s: %v", d, err)
	}
	return got
}

func walkAll(t *testing.T, c cache.LayerCache) map[v1.Hash]int64 {
	t.Helper()
	got := map[v1.Hash]int64{}
	err := c.Walk(ctxT(t), func(d v1.Hash, size int64) error {
		if _, dup := got[d]; dup {
			return fmt.Errorf("Walk listed %s twice", d)
		}
		got[d] = size
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return got
}

func expectAbsent(t *testing.T, c cache.LayerCache, d v1.Hash) {
	t.Helper()
	if _, err := c.Stat(ctxT(t), d); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want ErrNotFound: nothing may be stored", d, err)
	}
	if rc, err := c.Get(ctxT(t), d); !errors.Is(err, cache.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get(%s) = %v, want ErrNotFound", d, err)
	}
	if _, listed := walkAll(t, c)[d]; listed {
		t.Errorf("Walk lists %s, which must not be stored", d)
	}
}
