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
	"runtime"
	"runtime/metrics"
	"sort"
	"sync"
	"testing"
	"time"

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

func (s *suite) testRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 1<<20 + 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := s.newCache(t)
			b := NewBlob(uint64(n), n)
			put(t, c, b)
			size, err := c.Stat(ctxT(t), b.Digest)
			if err != nil || size != int64(n) {
				t.Fatalf("Stat = %d, %v; want %d, nil", size, err, n)
			}
			if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
				t.Fatalf("Get returned %d bytes that differ from the %d put", len(got), n)
			}
		})
	}
}

func (s *suite) testPutIdempotent(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(1, 10000)
	put(t, c, b)
	put(t, c, b)
	// A second Put of a stored blob may skip reading; if it does read, the
	// bytes are right, so it must succeed either way.
	if err := c.Put(ctxT(t), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatalf("third Put: %v", err)
	}
	if got := walkAll(t, c); len(got) != 1 || got[b.Digest] != int64(len(b.Data)) {
		t.Fatalf("Walk after 3 Puts of one blob = %v, want exactly that blob", got)
	}
	if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("content changed by repeated Put")
	}
}

func (s *suite) testPutWrongBytes(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(2, 5000)
	other := NewBlob(3, 5000)
	err := c.Put(ctxT(t), b.Digest, int64(len(other.Data)), bytes.NewReader(other.Data))
	if !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("Put of wrong bytes = %v, want ErrDigestMismatch", err)
	}
	expectAbsent(t, c, b.Digest)
	expectAbsent(t, c, other.Digest)
	// A stored blob is not harmed by a later bad Put of the same digest.
	put(t, c, b)
	err = c.Put(ctxT(t), b.Digest, int64(len(other.Data)), bytes.NewReader(other.Data))
	if err != nil && !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("bad Put over a stored blob = %v, want nil (skipped) or ErrDigestMismatch", err)
	}
	if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("a bad Put damaged the stored blob")
	}
}

func (s *suite) testPutWrongSize(t *testing.T) {
	b := NewBlob(4, 5000)
	for _, size := range []int64{4999, 5001, 0, 1 << 40} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := s.newCache(t)
			err := c.Put(ctxT(t), b.Digest, size, bytes.NewReader(b.Data))
			if err == nil {
				t.Fatalf("Put with size %d of a %d-byte blob succeeded", size, len(b.Data))
			}
			if !errors.Is(err, cache.ErrDigestMismatch) && !errors.Is(err, cache.ErrNoSpace) {
				t.Fatalf("Put with wrong size = %v, want ErrDigestMismatch (or ErrNoSpace for an impossible size)", err)
			}
			expectAbsent(t, c, b.Digest)
		})
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func (s *suite) testPutReaderError(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(5, 100000)
	boom := errors.New("connection reset by test")
	err := c.Put(ctxT(t), b.Digest, int64(len(b.Data)), &failingReader{data: b.Data[:50000], err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("Put from a failing reader = %v, want the reader's error in the chain", err)
	}
	expectAbsent(t, c, b.Digest)
}

// cancellingReader yields half its data, cancels the context, then keeps
// yielding, so Put must notice the cancellation itself.
type cancellingReader struct {
	data   []byte
	half   int
	cancel context.CancelFunc
	sent   int
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	if r.sent >= len(r.data) {
		return 0, io.EOF
	}
	if r.sent >= r.half {
		r.cancel()
	}
	end := min(r.sent+len(p), len(r.data))
	if r.sent < r.half {
		end = min(end, r.half)
	}
	n := copy(p, r.data[r.sent:end])
	r.sent += n
	return n, nil
}

func (s *suite) testPutCancelledHalfway(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(6, 4<<20)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	err := c.Put(ctx, b.Digest, int64(len(b.Data)), &cancellingReader{data: b.Data, half: len(b.Data) / 2, cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put cancelled half-way = %v, want context.Canceled", err)
	}
	expectAbsent(t, c, b.Digest)

	// An already cancelled context stores nothing either.
	if err := c.Put(ctx, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	expectAbsent(t, c, b.Digest)
}

func (s *suite) testNotFound(t *testing.T) {
	c := s.newCache(t)
	d := NewBlob(7, 10).Digest
	if _, err := c.Stat(ctxT(t), d); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Stat of missing = %v, want ErrNotFound", err)
	}
	rc, err := c.Get(ctxT(t), d)
	if !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Get of missing = %v, want ErrNotFound", err)
	}
	if err == nil {
		rc.Close()
	}
	if err := c.Delete(ctxT(t), d); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Delete of missing = %v, want ErrNotFound", err)
	}
}

// InvalidDigests are digests that every backend must reject with
// cache.ErrInvalidDigest before they reach a path or key.
var InvalidDigests = []v1.Hash{
	{},
	{Algorithm: "sha256"},
	{Algorithm: "sha256", Hex: "../../etc/passwd"},
	{Algorithm: "sha256", Hex: "../../../../../../../../../../../../../../../../../../../../../../tmp"},
	{Algorithm: "sha256", Hex: "/etc/passwd"},
	{Algorithm: "sha256", Hex: "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde/"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\x00"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg"},
	{Algorithm: "../sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	{Algorithm: "SHA256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	{Algorithm: "md5", Hex: "0123456789abcdef0123456789abcdef"},
	{Algorithm: "sha512", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
}

func (s *suite) testInvalidDigests(t *testing.T) {
	c := s.newCache(t)
	for _, d := range InvalidDigests {
		t.Run(fmt.Sprintf("%q", d.String()), func(t *testing.T) {
			check := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, cache.ErrInvalidDigest) {
					t.Errorf("%s(%q) = %v, want ErrInvalidDigest", op, d.String(), err)
				}
			}
			_, err := c.Stat(ctxT(t), d)
			check("Stat", err)
			rc, err := c.Get(ctxT(t), d)
			if err == nil {
				rc.Close()
			}
			check("Get", err)
			check("Put", c.Put(ctxT(t), d, 3, bytes.NewReader([]byte("abc"))))
			check("Delete", c.Delete(ctxT(t), d))
		})
	}
	if got := walkAll(t, c); len(got) != 0 {
		t.Fatalf("invalid digests left entries: %v", got)
	}
}

func (s *suite) testDelete(t *testing.T) {
	c := s.newCache(t)
	a, b := NewBlob(8, 1000), NewBlob(9, 1000)
	put(t, c, a)
	put(t, c, b)
	if err := c.Delete(ctxT(t), a.Digest); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	expectAbsent(t, c, a.Digest)
	if err := c.Delete(ctxT(t), a.Digest); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("Delete of one blob damaged another")
	}
	put(t, c, a) // a deleted blob can be stored again
	if got := mustGet(t, c, a.Digest); !bytes.Equal(got, a.Data) {
		t.Fatal("re-Put after Delete returned other bytes")
	}
}

func (s *suite) testWalk(t *testing.T) {
	c := s.newCache(t)
	want := map[v1.Hash]int64{}
	for i := range 20 {
		b := NewBlob(100+uint64(i), 100*i)
		put(t, c, b)
		want[b.Digest] = int64(len(b.Data))
	}
	for i := range 5 {
		d := NewBlob(100+uint64(i), 100*i).Digest
		if err := c.Delete(ctxT(t), d); err != nil {
			t.Fatal(err)
		}
		delete(want, d)
	}
	got := walkAll(t, c)
	if !equalSets(got, want) {
		t.Fatalf("Walk = %d entries %v, want %d %v", len(got), sortedKeys(got), len(want), sortedKeys(want))
	}
	stop := errors.New("stop")
	calls := 0
	err := c.Walk(ctxT(t), func(v1.Hash, int64) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Walk whose fn fails = %v after %d calls, want fn's error after 1", err, calls)
	}
}

func equalSets(a, b map[v1.Hash]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sortedKeys(m map[v1.Hash]int64) []string {
	var out []string
	for k := range m {
		out = append(out, k.Hex[:12])
	}
	sort.Strings(out)
	return out
}

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

func (s *suite) testStats(t *testing.T) {
	c := s.newCache(t)
	sr, ok := c.(cache.StatsReporter)
	if !ok {
		t.Skip("backend does not report Stats")
	}
	before := sr.Stats()
	b := NewBlob(11, 3000)
	put(t, c, b)
	mustGet(t, c, b.Digest)
	if rc, err := c.Get(ctxT(t), NewBlob(12, 3).Digest); err == nil {
		rc.Close()
	}
	after := sr.Stats()
	if after.Hits < before.Hits+1 {
		t.Errorf("Hits %d -> %d after a Get of a stored blob", before.Hits, after.Hits)
	}
	if after.Misses < before.Misses+1 {
		t.Errorf("Misses %d -> %d after a Get of a missing blob", before.Misses, after.Misses)
	}
	if after.BytesIn < before.BytesIn+3000 {
		t.Errorf("BytesIn %d -> %d after a 3000-byte Put", before.BytesIn, after.BytesIn)
	}
	if after.BytesOut < before.BytesOut+3000 {
		t.Errorf("BytesOut %d -> %d after a 3000-byte Get", before.BytesOut, after.BytesOut)
	}
}

func (s *suite) testCorruption(t *testing.T) {
	if s.cfg.corrupt == nil {
		t.Skip("backend has no Corrupter: its stored bytes cannot be changed from outside")
	}
	for _, how := range []Corruption{FlipByte, Truncate} {
		t.Run(how.String(), func(t *testing.T) {
			c := s.newCache(t)
			b := NewBlob(13, 300000)
			good := NewBlob(14, 300000)
			put(t, c, b)
			put(t, c, good)
			s.cfg.corrupt(t, c, b.Digest, how)

			var stats0 cache.Stats
			sr, hasStats := c.(cache.StatsReporter)
			if hasStats {
				stats0 = sr.Stats()
			}
			rc, err := c.Get(ctxT(t), b.Digest)
			if err == nil {
				var got []byte
				got, err = io.ReadAll(rc)
				if cerr := rc.Close(); err == nil {
					err = cerr
				}
				if err == nil {
					t.Fatalf("a %s blob was served as good (%d bytes, equal=%v)", how, len(got), bytes.Equal(got, b.Data))
				}
			}
			if !errors.Is(err, cache.ErrCorrupt) {
				t.Fatalf("Get of a %s blob = %v, want ErrCorrupt", how, err)
			}
			if _, err := c.Stat(ctxT(t), b.Digest); !errors.Is(err, cache.ErrNotFound) {
				t.Fatalf("after ErrCorrupt, Stat = %v; the bad entry must be gone", err)
			}
			if hasStats && sr.Stats().Corruptions <= stats0.Corruptions {
				t.Error("Stats().Corruptions did not count the corrupt entry")
			}
			if got := mustGet(t, c, good.Digest); !bytes.Equal(got, good.Data) {
				t.Fatal("a healthy blob was harmed")
			}
			put(t, c, b) // the entry can be repaired by a new Put
			if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
				t.Fatal("re-Put after corruption did not restore the blob")
			}
		})
	}
}

// stream yields n deterministic pseudo-random bytes without holding them:
// each 1 MiB chunk is a fixed random block with the chunk number mixed in.
type stream struct {
	block  []byte
	n, off int64
}

func newStream(n int64) *stream {
	return &stream{block: NewBlob(42, 1<<20).Data, n: n}
}

func (s *stream) Read(p []byte) (int, error) {
	if s.off >= s.n {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && s.off < s.n {
		chunk := s.off >> 20
		i := s.off & (1<<20 - 1)
		m := copy(p, s.block[i:min(int64(len(s.block)), i+s.n-s.off)])
		// Make chunks differ, so the blob is not one block repeated.
		if i < 8 {
			for j := i; j < 8 && j-i < int64(m); j++ {
				p[j-i] ^= byte(chunk >> (8 * j))
			}
		}
		p = p[m:]
		s.off += int64(m)
		total += m
	}
	return total, nil
}

// heapSampler records the peak of live heap objects while it runs.
type heapSampler struct {
	stop chan struct{}
	done chan struct{}
	peak uint64
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := heapObjects(); v > h.peak {
				h.peak = v
			}
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	<-h.done
	if v := heapObjects(); v > h.peak {
		h.peak = v
	}
	return h.peak
}

func (s *suite) testLargeBlob(t *testing.T) {
	if s.cfg.skipLarge != "" {
		t.Skip(s.cfg.skipLarge)
	}
	n := s.cfg.largeSize
	h := sha256.New()
	if _, err := io.Copy(h, newStream(n)); err != nil {
		t.Fatal(err)
	}
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	c := s.newCache(t)

	runtime.GC()
	base := heapObjects()
	sampler := startHeapSampler()
	if err := c.Put(ctxT(t), d, n, newStream(n)); err != nil {
		sampler.Stop()
		t.Fatalf("Put of a %d MiB stream: %v", n>>20, err)
	}
	rc, err := c.Get(ctxT(t), d)
	if err != nil {
		sampler.Stop()
		t.Fatalf("Get: %v", err)
	}
	h.Reset()
	got, err := io.Copy(h, rc)
	rc.Close()
	peak := sampler.Stop()
	if err != nil || got != n {
		t.Fatalf("Get streamed %d bytes, err %v; want %d", got, err, n)
	}
	if hex.EncodeToString(h.Sum(nil)) != d.Hex {
		t.Fatal("Get streamed other bytes than were put")
	}
	var growth uint64
	if peak > base {
		growth = peak - base
	}
	t.Logf("%d MiB through Put and Get: peak heap growth %.1f MiB", n>>20, float64(growth)/(1<<20))
	if growth > s.cfg.heapLimit {
		t.Fatalf("heap grew by %.1f MiB streaming %d MiB, limit %d MiB: the backend buffers instead of streaming",
			float64(growth)/(1<<20), n>>20, s.cfg.heapLimit>>20)
	}
}
