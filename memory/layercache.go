package memory

import (
	"bytes"
	"container/list"
	"context"
	"fmt"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/ctxio"
	"github.com/buildcache/buildcache/internal/verify"
)

// LayerCache is a bounded in-memory cache.LayerCache with LRU eviction.
// It is safe for concurrent use.
type LayerCache struct {
	maxBytes int64
	stats    cache.Counters

	mu      sync.Mutex
	used    int64
	lru     *list.List               // of *blobEntry, most recent first
	entries map[string]*list.Element // by digest hex
}

type blobEntry struct {
	hex  string
	data []byte
}

var (
	_ cache.LayerCacheCloser = (*LayerCache)(nil)
	_ cache.StatsReporter    = (*LayerCache)(nil)
)

// LayerCacheOption configures NewLayerCache. (Option is the
// ResourceCache's: this package has two cache types, so the LayerCache's
// options carry its name, as registry's do.)
type LayerCacheOption func(*layerCacheOptions) error

type layerCacheOptions struct {
	maxBytes int64
}

// WithLayerCacheMaxBytes bounds the bytes of blobs the cache holds: a Put
// that would exceed it evicts the least recently used blobs first, and a
// blob bigger than n fails with cache.ErrNoSpace. n must not be negative;
// 0, the default, means no bound.
func WithLayerCacheMaxBytes(n int64) LayerCacheOption {
	return func(o *layerCacheOptions) error {
		if n < 0 {
			return fmt.Errorf("memory: WithLayerCacheMaxBytes(%d): must not be negative", n)
		}
		o.maxBytes = n
		return nil
	}
}

// NewLayerCache returns an empty cache configured by opts. Without options
// it has no bound: set one with WithLayerCacheMaxBytes.
func NewLayerCache(opts ...LayerCacheOption) (*LayerCache, error) {
	var o layerCacheOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &LayerCache{maxBytes: o.maxBytes, lru: list.New(), entries: map[string]*list.Element{}}, nil
}

// Stats reports what the cache has done since it was created.
func (c *LayerCache) Stats() cache.Stats { return c.stats.Snapshot() }

// Stat implements cache.Stater.
func (c *LayerCache) Stat(ctx context.Context, d v1.Hash) (int64, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[d.Hex]; ok {
		return int64(len(el.Value.(*blobEntry).data)), nil
	}
	return 0, fmt.Errorf("memory: %s: %w", d, cache.ErrNotFound)
}

// Get implements cache.Getter.
func (c *LayerCache) Get(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: get %s: %w", d, err)
	}
	c.mu.Lock()
	el, ok := c.entries[d.Hex]
	if ok {
		c.lru.MoveToFront(el)
	}
	c.mu.Unlock()
	if !ok {
		c.stats.Misses.Add(1)
		return nil, fmt.Errorf("memory: %s: %w", d, cache.ErrNotFound)
	}
	c.stats.Hits.Add(1)
	return &countingReader{r: bytes.NewReader(el.Value.(*blobEntry).data), n: &c.stats.BytesOut}, nil
}

// maxPrealloc bounds what Put reserves before any byte has arrived.
const maxPrealloc = 1 << 20

// Put implements cache.Putter. The bytes are read into a buffer of the
// declared size while they are hashed, and stored only if they match.
func (c *LayerCache) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: put %s: %w", d, err)
	}
	if c.maxBytes > 0 && size > c.maxBytes {
		return fmt.Errorf("memory: put %s: %d bytes exceed the cache's %d: %w", d, size, c.maxBytes, cache.ErrNoSpace)
	}
	c.mu.Lock()
	if el, ok := c.entries[d.Hex]; ok {
		c.lru.MoveToFront(el)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()

	// Room for the declared size, but only up to maxPrealloc: a size is a
	// claim, and a claim of a terabyte must cost nothing until the bytes
	// arrive (a memory store may have no budget at all).
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(min(size, maxPrealloc)))
	}
	vr := verify.NewReader(ctxio.Reader(ctx, r), d, size, cache.ErrDigestMismatch)
	src := io.Reader(vr)
	if c.maxBytes > 0 && size < 0 {
		src = io.LimitReader(src, c.maxBytes+1)
	}
	if _, err := buf.ReadFrom(src); err != nil {
		return fmt.Errorf("memory: put %s: %w", d, err)
	}
	if c.maxBytes > 0 && int64(buf.Len()) > c.maxBytes {
		return fmt.Errorf("memory: put %s: more than the cache's %d bytes: %w", d, c.maxBytes, cache.ErrNoSpace)
	}
	if !vr.Verified() {
		return fmt.Errorf("memory: put %s: stream ended unverified: %w", d, cache.ErrDigestMismatch)
	}
	data := buf.Bytes()

	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[d.Hex]; ok { // a concurrent Put won
		c.lru.MoveToFront(el)
		return nil
	}
	c.entries[d.Hex] = c.lru.PushFront(&blobEntry{hex: d.Hex, data: data})
	c.used += int64(len(data))
	c.stats.BytesIn.Add(uint64(len(data)))
	for c.maxBytes > 0 && c.used > c.maxBytes {
		c.removeLocked(c.lru.Back())
		c.stats.Evictions.Add(1)
	}
	return nil
}

// Delete implements cache.Deleter.
func (c *LayerCache) Delete(ctx context.Context, d v1.Hash) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[d.Hex]
	if !ok {
		return fmt.Errorf("memory: delete %s: %w", d, cache.ErrNotFound)
	}
	c.removeLocked(el)
	return nil
}

func (c *LayerCache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*blobEntry)
	delete(c.entries, e.hex)
	c.used -= int64(len(e.data))
}

// Walk implements cache.Walker. It walks a snapshot, so fn may call back
// into the cache.
func (c *LayerCache) Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error {
	type item struct {
		hex  string
		size int64
	}
	c.mu.Lock()
	items := make([]item, 0, len(c.entries))
	for hex, el := range c.entries {
		items = append(items, item{hex, int64(len(el.Value.(*blobEntry).data))})
	}
	c.mu.Unlock()
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(v1.Hash{Algorithm: "sha256", Hex: it.hex}, it.size); err != nil {
			return err
		}
	}
	return nil
}

// Len is the number of blobs held.
func (c *LayerCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Size is the number of bytes held.
func (c *LayerCache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

type countingReader struct {
	r *bytes.Reader
	n interface{ Add(uint64) uint64 }
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(uint64(n))
	return n, err
}

func (r *countingReader) WriteTo(w io.Writer) (int64, error) {
	n, err := r.r.WriteTo(w)
	r.n.Add(uint64(n))
	return n, err
}

func (r *countingReader) Close() error { return nil }

// Close implements io.Closer. A LayerCache holds nothing but memory, which
// the garbage collector takes back once it is unreachable: Close does
// nothing, and the cache stays usable.
func (c *LayerCache) Close() error { return nil }
