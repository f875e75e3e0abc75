// Package tier stacks two LayerCaches: a near tier (a local disk or
// memory) in front of a far, shared one (a bucket or a registry repository
// that every CI runner sees).
//
// Reads try the near tier, fall through to the far tier, and fill the near
// tier with what they stream to the caller. Writes go to both: the far
// tier synchronously, or in the background with WithAsyncFar. A far tier
// that fails (down, throttling, wrong credentials, a bucket that does not
// exist) is not a failure of the cache: the near tier keeps serving, the
// failure is counted in StatsByTier().FarErrors, LastFarError returns it,
// and WithLogger's logger gets one warning when the far tier starts
// failing and one record when a far call succeeds again.
//
// # A far tier that is down
//
// A far call that reaches nothing (cache.ErrOffline, or a network error:
// refused, reset, silent past its backend's timeouts) makes the far tier
// known down for 10 s. Meanwhile the tier does not ask it: reads are the
// near tier's (a near miss is a miss), and far writes are skipped, not
// queued — the blob stays in the near tier only, as if the far write had
// failed — and counted in StatsByTier().FarSkipped. Then one probe (a Stat
// of the blob asked for) runs in the background while calls go on
// skipping the far tier; an answer ends the outage. So a far tier that is
// down costs the near tier's speed plus the one far call that found it
// down (bounded by the far backend's own timeouts: s3.WithTimeouts,
// regclient.WithTimeouts), not a delay per blob.
//
// The roots of cache.RootIndex (what a registry.Resolver records) are the
// near tier's: a resolver over a tier whose near tier is a localfs.Store
// remembers its references across restarts, as it would over the store.
//
// # A fleet over one bucket
//
// When the far tier keeps records of its own (an s3.Cache), the tier
// records every root there too and looks up there what the near tier
// lacks, forwards the far tier's revalidation claims, and leases in both
// tiers, so that many processes over one bucket, each with its own near
// tier, behave as one cache: a fresh process serves a tag the fleet
// knows, a tag costs one registry request per max age across the fleet,
// and the bucket's collector keeps what any pull is working on
// (fleet.go; the s3 package's doc, # Fleet).
package tier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/memo"
	"github.com/buildcache/buildcache/internal/rootindex"
)

// Cache is a cache.LayerCache made of a near and a far tier.
type Cache struct {
	near, far cache.LayerCache
	o         options

	stats      cache.Counters
	nearHits   atomic.Uint64
	farHits    atomic.Uint64
	fills      atomic.Uint64
	farErrors  atomic.Uint64
	farSkipped atomic.Uint64

	farRecordHits atomic.Uint64 // fleet.go
	backfilled    atomic.Uint64

	memIndex    rootindex.Memory          // the roots, when the near tier keeps none
	farRecorded memo.Map[string, v1.Hash] // reference -> the digest last recorded in the far tier: fleet.go

	bg     context.Context // of probes; cancelled by Close
	stopBg context.CancelFunc
	probes sync.WaitGroup

	mu       sync.Mutex
	pending  int64                    // bytes queued for background far writes
	inflight map[string]chan struct{} // background far writes by digest
	lastErr  error
	health   farHealth
}

var (
	_ cache.LayerCache    = (*Cache)(nil)
	_ cache.StatsReporter = (*Cache)(nil)
	_ cache.RootIndex     = (*Cache)(nil)
)

type options struct {
	asyncFar   bool
	maxPending int64
	logger     *slog.Logger
	now        func() time.Time
}

// Option configures a Cache.
type Option func(*options) error

// WithAsyncFar makes Put return once the near tier has the blob and write
// the far tier in the background, with at most maxPending bytes queued;
// beyond that a Put writes the far tier itself. Default: synchronous.
// Call Flush to wait for background writes.
func WithAsyncFar(maxPending int64) Option {
	return func(o *options) error {
		if maxPending <= 0 {
			return fmt.Errorf("tier: WithAsyncFar(%d): need a positive bound", maxPending)
		}
		o.asyncFar, o.maxPending = true, maxPending
		return nil
	}
}

// WithLogger makes the tier log on l one warning when its far tier starts
// failing (with the error, and whether the far tier is unreachable and
// skipped for a while) and one Info record when a far call succeeds
// again. Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("tier: WithLogger(nil)")
		}
		o.logger = l
		return nil
	}
}

// New stacks near in front of far.
func New(near, far cache.LayerCache, opts ...Option) (*Cache, error) {
	if near == nil || far == nil {
		return nil, errors.New("tier: New needs a near and a far tier")
	}
	c := &Cache{near: near, far: far, inflight: map[string]chan struct{}{}}
	c.farRecorded.Max = maxFarRecorded
	c.o = options{logger: slog.New(slog.DiscardHandler), now: time.Now}
	for _, opt := range opts {
		if err := opt(&c.o); err != nil {
			return nil, err
		}
	}
	c.bg, c.stopBg = context.WithCancel(context.Background())
	return c, nil
}

// Near is the near tier, as given to New: what it can do beyond
// cache.LayerCache (a directory, an index of roots) is reached through it.
func (c *Cache) Near() cache.LayerCache { return c.near }

// Far is the far tier, as given to New.
func (c *Cache) Far() cache.LayerCache { return c.far }

// Stats implements cache.StatsReporter.
func (c *Cache) Stats() cache.Stats { return c.stats.Snapshot() }

// StatsByTier reports the cache's own counters with how reads were
// served and each tier's counters (those of a tier that reports none are
// zero).
func (c *Cache) StatsByTier() cache.TierStats {
	s := cache.TierStats{
		Stats:      c.stats.Snapshot(),
		NearHits:   c.nearHits.Load(),
		FarHits:    c.farHits.Load(),
		Fills:      c.fills.Load(),
		FarErrors:  c.farErrors.Load(),
		FarSkipped: c.farSkipped.Load(),
	}
	if sr, ok := c.near.(cache.StatsReporter); ok {
		s.Near = sr.Stats()
	}
	if sr, ok := c.far.(cache.StatsReporter); ok {
		s.Far = sr.Stats()
	}
	return s
}

// LastFarError is the most recent far tier failure, or nil.
func (c *Cache) LastFarError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Stat implements cache.Stater.
func (c *Cache) Stat(ctx context.Context, d v1.Hash) (int64, error) {
	size, err := c.near.Stat(ctx, d)
	if err == nil || !errors.Is(err, cache.ErrNotFound) {
		return size, err
	}
	if !c.farUsable(d) {
		return 0, c.skipped(d, cache.ErrNotFound)
	}
	size, ferr := c.far.Stat(ctx, d)
	if c.farDone(ctx, ferr) {
		return 0, fmt.Errorf("tier: %s: %w (far tier failed: %v)", d, cache.ErrNotFound, ferr)
	}
	return size, ferr
}

// Get implements cache.Getter. A near miss streams from the far tier and
// copies into the near tier as the caller reads; the copy is kept only if
// the whole blob arrived and matched.
func (c *Cache) Get(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	rc, err := c.near.Get(ctx, d)
	if err == nil {
		c.nearHits.Add(1)
		c.stats.Hits.Add(1)
		return &counted{ReadCloser: rc, n: &c.stats.BytesOut}, nil
	}
	if !errors.Is(err, cache.ErrNotFound) {
		return nil, err
	}
	if !c.farUsable(d) {
		c.stats.Misses.Add(1)
		return nil, c.skipped(d, cache.ErrNotFound)
	}
	size, err := c.far.Stat(ctx, d)
	if err == nil {
		var frc io.ReadCloser
		if frc, err = c.far.Get(ctx, d); err == nil {
			c.farDone(ctx, nil)
			c.farHits.Add(1)
			c.stats.Hits.Add(1)
			return c.fill(ctx, d, size, frc), nil
		}
	}
	if c.farDone(ctx, err) {
		c.stats.Misses.Add(1)
		return nil, fmt.Errorf("tier: %s: %w (far tier failed: %v)", d, cache.ErrNotFound, err)
	}
	if errors.Is(err, cache.ErrNotFound) {
		c.stats.Misses.Add(1)
	}
	return nil, err
}

// fill returns a reader over the far stream that feeds the near tier's Put
// through a pipe.
func (c *Cache) fill(ctx context.Context, d v1.Hash, size int64, far io.ReadCloser) io.ReadCloser {
	pr, pw := io.Pipe()
	f := &filler{far: far, pw: pw, done: make(chan error, 1), c: c}
	go func() {
		err := c.near.Put(context.WithoutCancel(ctx), d, size, pr)
		pr.CloseWithError(err) // unblock the reader side if Put stopped early
		if err == nil {
			c.fills.Add(1)
		}
		f.done <- err
	}()
	return f
}

type filler struct {
	far      io.ReadCloser
	pw       *io.PipeWriter
	done     chan error
	c        *Cache
	closed   bool
	nearGone bool // the near tier stopped taking bytes (full, failed)
}

func (f *filler) Read(p []byte) (int, error) {
	n, err := f.far.Read(p)
	if n > 0 {
		f.c.stats.BytesOut.Add(uint64(n))
		if !f.nearGone {
			if _, werr := f.pw.Write(p[:n]); werr != nil {
				f.nearGone = true // the caller is still served from far
			}
		}
	}
	switch {
	case err == io.EOF:
		f.pw.Close()
	case err != nil:
		f.pw.CloseWithError(err) // the near Put fails: nothing half is kept
	}
	return n, err
}

// Close ends the far stream; a caller that stops early leaves no near copy.
func (f *filler) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	err := f.far.Close()
	f.pw.CloseWithError(errors.New("tier: reader closed before the end of the blob"))
	<-f.done // the near Put has finished, kept or discarded
	return err
}

// Put implements cache.Putter: the near tier first (it verifies), then the
// far tier, synchronously or in the background.
func (c *Cache) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	return c.put(ctx, d, size, r, c.near.Put)
}

// put stores with nearPut (the near tier's Put or PutDeferred), then
// copies to the far tier.
func (c *Cache) put(ctx context.Context, d v1.Hash, size int64, r io.Reader, nearPut func(context.Context, v1.Hash, int64, io.Reader) error) error {
	if err := nearPut(ctx, d, size, r); err != nil {
		return err
	}
	c.stats.BytesIn.Add(uint64(max(size, 0)))
	if !c.farUsable(d) {
		return nil // the near tier has it; the far write is skipped and counted
	}
	if c.o.asyncFar {
		c.mu.Lock()
		_, busy := c.inflight[d.Hex]
		queued := !busy && c.pending+max(size, 0) <= c.o.maxPending
		var done chan struct{}
		if queued {
			c.pending += max(size, 0)
			done = make(chan struct{})
			c.inflight[d.Hex] = done
		}
		c.mu.Unlock()
		if busy {
			return nil // a background write of this blob is under way
		}
		if queued {
			go func() {
				bg := context.WithoutCancel(ctx)
				if c.farUsable(d) { // it may have gone down while this waited
					c.farDone(bg, c.copyToFar(bg, d, size))
				}
				c.mu.Lock()
				c.pending -= max(size, 0)
				delete(c.inflight, d.Hex)
				c.mu.Unlock()
				close(done)
			}()
			return nil
		}
	}
	c.farDone(ctx, c.copyToFar(ctx, d, size))
	return nil // the near tier has it; a far failure is counted, not returned
}

// copyToFar copies a blob the near tier holds to the far tier, unless the
// far tier already has it.
func (c *Cache) copyToFar(ctx context.Context, d v1.Hash, size int64) error {
	if fs, err := c.far.Stat(ctx, d); err == nil && (size < 0 || fs == size) {
		return nil
	}
	rc, err := c.near.Get(ctx, d)
	if err != nil {
		if errors.Is(err, cache.ErrNotFound) {
			return nil // evicted from the near tier meanwhile: nothing to copy
		}
		return err
	}
	defer rc.Close()
	return c.far.Put(ctx, d, size, rc)
}

// Flush waits for the background far work started so far: far writes
// (WithAsyncFar) and a probe of a far tier that was down.
func (c *Cache) Flush() {
	defer c.probes.Wait()
	c.mu.Lock()
	var waits []chan struct{}
	for _, ch := range c.inflight {
		waits = append(waits, ch)
	}
	c.mu.Unlock()
	for _, ch := range waits {
		<-ch
	}
}

// Delete implements cache.Deleter: it removes the blob from both tiers.
func (c *Cache) Delete(ctx context.Context, d v1.Hash) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	// A background copy finishing after the delete would bring it back.
	c.mu.Lock()
	done := c.inflight[d.Hex]
	c.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	nerr := c.near.Delete(ctx, d)
	if nerr != nil && !errors.Is(nerr, cache.ErrNotFound) {
		return nerr
	}
	if !c.farUsable(d) {
		if nerr == nil {
			return nil // deleted where it could be; the far copy stays
		}
		return c.skipped(d, cache.ErrOffline)
	}
	ferr := c.far.Delete(ctx, d)
	if ferr != nil && !errors.Is(ferr, cache.ErrNotFound) {
		if c.farDone(ctx, ferr) && nerr == nil {
			return nil // deleted where it could be; the far copy stays
		}
		return ferr
	}
	if nerr != nil && ferr != nil {
		return nerr
	}
	return nil
}

// Walk implements cache.Walker: every blob of either tier, once.
func (c *Cache) Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error {
	seen := map[string]bool{}
	if err := c.near.Walk(ctx, func(d v1.Hash, size int64) error {
		seen[d.Hex] = true
		return fn(d, size)
	}); err != nil {
		return err
	}
	if !c.farUsable(v1.Hash{}) {
		return nil // the near tier was listed; the far one is down
	}
	err := c.far.Walk(ctx, func(d v1.Hash, size int64) error {
		if seen[d.Hex] {
			return nil
		}
		if err := fn(d, size); err != nil {
			return &walkStop{err}
		}
		return nil
	})
	var stop *walkStop
	if errors.As(err, &stop) {
		return stop.error
	}
	if c.farDone(ctx, err) {
		return nil // the near tier was listed; the far one is unreachable
	}
	return err
}

type walkStop struct{ error }

type counted struct {
	io.ReadCloser
	n *atomic.Uint64
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

// WriteTo keeps the tier's own fast path (localfs copies with a 1 MiB
// buffer); without it io.Copy would read 8 KiB at a time.
func (c *counted) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.ReadCloser.(io.WriterTo); ok {
		n, err := wt.WriteTo(w)
		c.n.Add(uint64(n))
		return n, err
	}
	return io.Copy(w, struct{ io.Reader }{c})
}
