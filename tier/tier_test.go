package tier_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/tier"
)

func disk(t *testing.T) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mem(t *testing.T) *memory.LayerCache {
	c, err := memory.NewLayerCache(memory.WithLayerCacheMaxBytes(512 << 20))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name      string
		near, far func(*testing.T) cache.LayerCache
		opts      []tier.Option
		large     bool
	}{
		{"memory+memory", func(t *testing.T) cache.LayerCache { return mem(t) }, func(t *testing.T) cache.LayerCache { return mem(t) }, nil, false},
		{"localfs+memory", func(t *testing.T) cache.LayerCache { return disk(t) }, func(t *testing.T) cache.LayerCache { return mem(t) }, nil, false},
		{"memory+localfs", func(t *testing.T) cache.LayerCache { return mem(t) }, func(t *testing.T) cache.LayerCache { return disk(t) }, nil, false},
		{"localfs+localfs", func(t *testing.T) cache.LayerCache { return disk(t) }, func(t *testing.T) cache.LayerCache { return disk(t) }, nil, true},
		{"localfs+localfs async", func(t *testing.T) cache.LayerCache { return disk(t) }, func(t *testing.T) cache.LayerCache { return disk(t) }, []tier.Option{tier.WithAsyncFar(64 << 20)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []cachetest.Option
			if !tc.large {
				opts = append(opts, cachetest.WithoutLargeBlob("a memory tier holds blobs in memory; streaming is checked on localfs+localfs"))
			}
			cachetest.Run(t, func(t *testing.T) cache.LayerCache {
				c, err := tier.New(tc.near(t), tc.far(t), tc.opts...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(c.Flush)
				return c
			}, opts...)
		})
	}
}

func put(t *testing.T, c cache.LayerCache, b cachetest.Blob) {
	t.Helper()
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, c cache.LayerCache, d v1.Hash) ([]byte, error) {
	t.Helper()
	rc, err := c.Get(t.Context(), d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestReadFromFarFillsNear(t *testing.T) {
	near, far := disk(t), disk(t)
	c, _ := tier.New(near, far)
	b := cachetest.NewBlob(1, 3<<20)
	put(t, far, b) // another runner uploaded it

	got, err := read(t, c, b.Digest)
	if err != nil || !bytes.Equal(got, b.Data) {
		t.Fatalf("far read: %v", err)
	}
	if _, err := near.Stat(t.Context(), b.Digest); err != nil {
		t.Fatalf("near tier not filled: %v", err)
	}
	if _, err := read(t, c, b.Digest); err != nil {
		t.Fatal(err)
	}
	st := c.StatsByTier()
	if st.FarHits != 1 || st.NearHits != 1 || st.Fills != 1 {
		t.Fatalf("stats %+v, want 1 far hit, then 1 near hit, 1 fill", st)
	}
}

func TestEarlyCloseLeavesNoNearCopy(t *testing.T) {
	near, far := disk(t), disk(t)
	c, _ := tier.New(near, far)
	b := cachetest.NewBlob(2, 4<<20)
	put(t, far, b)
	rc, err := c.Get(t.Context(), b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := near.Stat(t.Context(), b.Digest); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("a read closed early left a near copy: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(near.Dir(), ".buildcache", "tmp")); len(entries) != 0 {
		t.Fatalf("temp files left in the near tier: %v", entries)
	}
}

func TestCorruptFarBlobIsNotCopied(t *testing.T) {
	near, far := disk(t), disk(t)
	c, _ := tier.New(near, far)
	b := cachetest.NewBlob(3, 1<<20)
	put(t, far, b)
	p := filepath.Join(far.Dir(), "blobs", "sha256", b.Digest.Hex)
	data, _ := os.ReadFile(p)
	data[12345] ^= 1
	os.WriteFile(p, data, 0o644)

	if _, err := read(t, c, b.Digest); !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("read of a corrupt far blob = %v, want ErrCorrupt", err)
	}
	if _, err := near.Stat(t.Context(), b.Digest); !errors.Is(err, cache.ErrNotFound) {
		t.Fatal("a corrupt far blob was copied into the near tier")
	}
}

func TestCorruptNearBlobIsReplacedFromFar(t *testing.T) {
	near, far := disk(t), disk(t)
	c, _ := tier.New(near, far)
	b := cachetest.NewBlob(4, 1<<20)
	put(t, c, b)
	p := filepath.Join(near.Dir(), "blobs", "sha256", b.Digest.Hex)
	os.Truncate(p, 1000)
	if _, err := read(t, c, b.Digest); !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("first read after damage = %v, want ErrCorrupt", err)
	}
	got, err := read(t, c, b.Digest) // the bad near entry is gone: served from far
	if err != nil || !bytes.Equal(got, b.Data) {
		t.Fatalf("second read = %v, want the far copy", err)
	}
	if size, err := near.Stat(t.Context(), b.Digest); err != nil || size != int64(len(b.Data)) {
		t.Fatalf("near tier not repaired: %d, %v", size, err)
	}
}

// downCache is a far tier whose server is gone.
type downCache struct{}

var errDown = errors.New("dial tcp 127.0.0.1:9: connect: connection refused")

func (downCache) Stat(context.Context, v1.Hash) (int64, error)           { return 0, errDown }
func (downCache) Get(context.Context, v1.Hash) (io.ReadCloser, error)    { return nil, errDown }
func (downCache) Put(context.Context, v1.Hash, int64, io.Reader) error   { return errDown }
func (downCache) Delete(context.Context, v1.Hash) error                  { return errDown }
func (downCache) Walk(context.Context, func(v1.Hash, int64) error) error { return errDown }

func TestFarTierDownDegradesToNear(t *testing.T) {
	for _, async := range []bool{false, true} {
		near := disk(t)
		var opts []tier.Option
		if async {
			opts = append(opts, tier.WithAsyncFar(1<<20))
		}
		c, _ := tier.New(near, downCache{}, opts...)
		b := cachetest.NewBlob(5, 1000)
		if err := c.Put(t.Context(), b.Digest, 1000, bytes.NewReader(b.Data)); err != nil {
			t.Fatalf("async=%v: Put with the far tier down = %v, want success on the near tier", async, err)
		}
		c.Flush()
		if got, err := read(t, c, b.Digest); err != nil || !bytes.Equal(got, b.Data) {
			t.Fatalf("near read with the far tier down: %v", err)
		}
		_, err := read(t, c, cachetest.NewBlob(6, 10).Digest)
		if !errors.Is(err, cache.ErrNotFound) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("miss with the far tier down = %v, want ErrNotFound naming the far failure", err)
		}
		n := 0
		if err := c.Walk(t.Context(), func(v1.Hash, int64) error { n++; return nil }); err != nil || n != 1 {
			t.Fatalf("Walk with the far tier down = %d, %v; want the near blob", n, err)
		}
		if st := c.StatsByTier(); st.FarErrors < 3 || c.LastFarError() == nil {
			t.Fatalf("far failures not counted: %+v", st)
		}
	}
}

func TestAsyncFarWritesLand(t *testing.T) {
	near, far := disk(t), disk(t)
	c, _ := tier.New(near, far, tier.WithAsyncFar(8<<20))
	var blobs []cachetest.Blob
	for i := range 10 {
		b := cachetest.NewBlob(100+uint64(i), 2<<20) // 20 MiB > 8 MiB bound: some go synchronously
		blobs = append(blobs, b)
		put(t, c, b)
	}
	c.Flush()
	for _, b := range blobs {
		if got, err := read(t, far, b.Digest); err != nil || !bytes.Equal(got, b.Data) {
			t.Fatalf("far tier lacks %s after Flush: %v", b.Digest, err)
		}
	}
}

// An ingestion through the tier is written once, into the near tier, and
// reaches the far tier at Commit, as a Put would.
func TestIngestReachesFar(t *testing.T) {
	far := mem(t)
	c, err := tier.New(disk(t), far)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := cachetest.NewBlob(701, 100<<10)
	in, err := c.Ingest(t.Context(), b.Digest, int64(len(b.Data)))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := in.Write(b.Data); err != nil {
		t.Fatal(err)
	}
	if err := in.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := far.Stat(t.Context(), b.Digest); err != nil {
		t.Errorf("far tier after Commit: %v", err)
	}
	if _, err := c.Near().Stat(t.Context(), b.Digest); err != nil {
		t.Errorf("near tier after Commit: %v", err)
	}
}
