package memory

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"reflect"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/buildcache/buildcache/cache"
)

// Defaults of New, each changed by the option named.
const (
	rcDefaultTTL     = 30 * time.Second // WithTTL
	rcDefaultMaxCost = 64 << 20         // WithMaxCost: 64 MiB
)

// rcMeanEntryCost is the mean entry cost New assumes when it sizes
// ristretto's admission counters: ten per entry expected to fit (as
// ristretto advises), between 4096 and 1<<20 counters (2 MiB or so).
const rcMeanEntryCost = 1 << 10

// Cache is a read-through cache.ResourceCache on ristretto: each entry
// lives for a TTL, the entries together stay under a cost bound, and
// identical concurrent misses cause a single load. Create it with New and
// release its goroutines with Close. All methods are safe for concurrent
// use, except Close: see there.
//
// # Loads
//
// A Get that finds no fresh entry calls its load function, unless a load of
// the same key is already running: then it waits for that one and returns
// its result; Refresh's load is shared the same way. The load runs in a
// goroutine of its own with a context that keeps the values of the first
// caller's ctx but not its deadline or cancellation, so one caller giving
// up does not fail the others. Each caller stops waiting when its own ctx
// is done; when the last one has gone, the load's context is cancelled
// (with a cause saying so) and its result is thrown away.
//
// When Get or Refresh returns a loaded value, it is already visible to the
// next Get, unless ristretto declined to keep it (the cache was full and
// the key was not worth a place, or the value alone exceeds the bound).
// That only costs a reload: a value is never served after its TTL, however
// late ristretto removes it.
//
// A load that panics makes every caller waiting for it panic with an error
// that holds the original value and the load's stack; nothing is stored,
// and the next Get loads again.
//
// # Invalidation
//
// Invalidate, Refresh and Purge are ordered with loads: a load that started
// before one of them does not store its result afterwards (its own callers
// still receive it), and a Get that comes after it does not join the older
// load.
type Cache[K comparable, V any] struct {
	rc         *ristretto.Cache[uint64, *rcEntry[K, V]]
	hash       func(K) uint64
	now        func() time.Time
	realClock  bool // now is time.Now
	ttl        time.Duration
	negTTL     time.Duration
	isNegative func(error) bool
	cost       func(V) int64 // nil: the entry's fixed size only
	overhead   int64         // the fixed size of an entry, in bytes

	mu     sync.Mutex
	calls  map[K]*rcCall[V] // loads in flight, by key
	closed bool

	// wmu orders every write to rc (a store and its Wait, Del, Clear,
	// Close) with the staleness check that precedes a store. Taken before
	// mu when both are held.
	wmu     sync.Mutex
	purging atomic.Bool // Clear is running: its removals are not evictions

	stats rcCounters
}

var _ cache.ResourceCache[string, int] = (*Cache[string, int])(nil)

// rcEntry is what ristretto holds: the key (ristretto knows only its hash),
// and either a value or a negative error, until expires.
type rcEntry[K comparable, V any] struct {
	key     K
	val     V
	err     error // non-nil: a negative entry
	expires time.Time
}

// rcCall is one load in flight. val, err and panic are written by the
// loading goroutine before it closes done, and read by waiters after.
type rcCall[V any] struct {
	done   chan struct{}
	cancel context.CancelCauseFunc

	// Guarded by Cache.mu.
	waiters  int  // callers still waiting
	stale    bool // superseded, invalidated or abandoned: do not store
	finished bool // load has returned

	val   V
	err   error
	panic *rcPanicError
}

// rcCounters are the live counters behind ResourceStats. Hits, the only
// counter on the fast path, are counted in stripes, each on a cache line
// of its own, so that hits on different cores do not contend for one
// counter (nor with the fields every hit reads). A core finds its stripe
// through a token kept in a sync.Pool, which hands each P its own: when
// the pool drops tokens (at GC), new ones take the next stripes; no count
// is lost, as counts live in the stripes. On two cores this made a hit in
// BenchmarkResourceCacheHitParallel about a fifth cheaper than one shared
// counter did.
type rcCounters struct {
	_             [64]byte
	hits          [rcHitStripes]rcStripe
	tokens        sync.Pool // of *rcToken
	nextStripe    atomic.Uint32
	_             [64]byte
	negativeHits  atomic.Uint64
	misses        atomic.Uint64
	loads         atomic.Uint64
	loadErrors    atomic.Uint64
	coalesced     atomic.Uint64
	evictions     atomic.Uint64
	invalidations atomic.Uint64
}

const rcHitStripes = 8 // a power of two

// rcHit counts a hit in the stripe of the calling P's token.
func (s *rcCounters) rcHit() {
	t, _ := s.tokens.Get().(*rcToken)
	if t == nil {
		t = &rcToken{stripe: s.nextStripe.Add(1) % rcHitStripes}
	}
	s.hits[t.stripe].n.Add(1)
	s.tokens.Put(t)
}

type rcToken struct{ stripe uint32 }

type rcStripe struct {
	n atomic.Uint64
	_ [56]byte
}

// ResourceStats is a snapshot of what a Cache has done since New.
type ResourceStats struct {
	Hits          uint64 // Gets answered with a cached value
	NegativeHits  uint64 // Gets answered with a cached (negative) error
	Misses        uint64 // Gets that found no fresh entry, including those that joined a load
	Loads         uint64 // load functions called, by Get and Refresh
	LoadErrors    uint64 // loads that returned an error (negative ones included) or panicked
	Coalesced     uint64 // Gets that waited for a load another caller started
	Evictions     uint64 // entries ristretto evicted for room or expiry, or refused to admit
	Invalidations uint64 // calls of Invalidate
}

// HitRatio is (Hits + NegativeHits) / (Hits + NegativeHits + Misses), or 0
// when there were no Gets.
func (s ResourceStats) HitRatio() float64 {
	hits := s.Hits + s.NegativeHits
	if hits+s.Misses == 0 {
		return 0
	}
	return float64(hits) / float64(hits+s.Misses)
}

// Option configures New.
type Option func(*rcOptions) error

type rcOptions struct {
	ttl        time.Duration
	maxCost    int64
	cost       any // func(V) int64, checked by New
	negTTL     time.Duration
	isNegative func(error) bool
	now        func() time.Time
}

// WithTTL sets how long a loaded value is served before the next Get loads
// it again. The TTL counts from the moment the load started. It must be
// positive; the default is 30s.
func WithTTL(d time.Duration) Option {
	return func(o *rcOptions) error {
		if d <= 0 {
			return fmt.Errorf("memory: WithTTL(%v): the TTL must be positive", d)
		}
		o.ttl = d
		return nil
	}
}

// WithMaxCost bounds the total cost of the entries, in bytes if the cost
// function counts bytes (the default one does). It must be positive; the
// default is 64 MiB.
func WithMaxCost(bytes int64) Option {
	return func(o *rcOptions) error {
		if bytes <= 0 {
			return fmt.Errorf("memory: WithMaxCost(%d): the bound must be positive", bytes)
		}
		o.maxCost = bytes
		return nil
	}
}

// WithCost sets the cost of a value, in the unit of WithMaxCost: typically
// the bytes it holds beyond its own shallow size (for a Kubernetes object,
// the length of its JSON is a fair estimate). The cache adds a fixed
// per-entry overhead (the shallow size of key, value and bookkeeping) to
// it; negative results count as 0. V must be the value type of the cache
// New makes, or New fails.
//
// By default only that fixed overhead is counted, which is right for values
// that own no memory (numbers, small structs) and an underestimate for
// pointers, slices, maps and strings.
func WithCost[V any](cost func(V) int64) Option {
	return func(o *rcOptions) error {
		if cost == nil {
			return errors.New("memory: WithCost(nil)")
		}
		o.cost = cost
		return nil
	}
}

// WithNegativeTTL caches errors for which isNegative reports true (for
// example errors.Is(err, cache.ErrNotFound)) for d, usually shorter than
// the TTL: until then Get returns the same error without calling load.
// Other errors are never cached. By default no error is cached.
func WithNegativeTTL(d time.Duration, isNegative func(error) bool) Option {
	return func(o *rcOptions) error {
		if d <= 0 {
			return fmt.Errorf("memory: WithNegativeTTL(%v): the TTL must be positive", d)
		}
		if isNegative == nil {
			return errors.New("memory: WithNegativeTTL: isNegative is nil")
		}
		o.negTTL, o.isNegative = d, isNegative
		return nil
	}
}

// WithClock sets the clock that TTLs are measured with; the default is
// time.Now. It is meant for tests. ristretto's own clean-up of expired
// entries keeps using the real clock, which only affects memory use: every
// Get checks the entry's expiry against this clock.
func WithClock(now func() time.Time) Option {
	return func(o *rcOptions) error {
		if now == nil {
			return errors.New("memory: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}

// New returns an empty Cache configured by opts. Without options, entries
// live for 30s, the cache holds at most 64 MiB by the default cost
// estimate (see WithCost), errors are not cached and the clock is
// time.Now. K can be any comparable type: ristretto is keyed by a hash of
// the key with a seed of this cache's own, and a hit compares the key.
func New[K comparable, V any](opts ...Option) (*Cache[K, V], error) {
	o := rcOptions{ttl: rcDefaultTTL, maxCost: rcDefaultMaxCost}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	c := &Cache[K, V]{
		now:        o.now,
		realClock:  o.now == nil,
		ttl:        o.ttl,
		negTTL:     o.negTTL,
		isNegative: o.isNegative,
		overhead:   int64(unsafe.Sizeof(rcEntry[K, V]{})),
		calls:      make(map[K]*rcCall[V]),
	}
	if c.realClock {
		c.now = time.Now
	}
	if o.cost != nil {
		cost, ok := o.cost.(func(V) int64)
		if !ok {
			return nil, fmt.Errorf("memory: WithCost: the cost function is a %T, but the cache holds %v values (want a func(%[2]v) int64)",
				o.cost, reflect.TypeFor[V]())
		}
		c.cost = cost
	}

	seed := maphash.MakeSeed()
	c.hash = func(k K) uint64 { return maphash.Comparable(seed, k) }

	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *rcEntry[K, V]]{
		NumCounters: min(max(10*o.maxCost/rcMeanEntryCost, 1<<12), 1<<20),
		MaxCost:     o.maxCost,
		BufferItems: 64,
		// The key already is a hash. A conflict hash cannot be derived
		// from the user's key here, and is not needed: a hit is confirmed
		// by comparing the key stored in the entry. A collision only makes
		// two keys take turns in one slot.
		KeyToHash: func(h uint64) (uint64, uint64) { return h, 0 },
		OnEvict:   func(*ristretto.Item[*rcEntry[K, V]]) { c.rcCountEviction() },
		OnReject:  func(*ristretto.Item[*rcEntry[K, V]]) { c.rcCountEviction() },
	})
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	c.rc = rc
	return c, nil
}

func (c *Cache[K, V]) rcCountEviction() {
	if !c.purging.Load() {
		c.stats.evictions.Add(1)
	}
}

// Get returns the value cached for key if it is younger than its TTL, or
// the negative error cached for it (see WithNegativeTTL). Otherwise it
// loads the value with load, or waits for a load of key already running,
// and caches the result; see Cache for how loads are shared and cancelled.
// Errors from load are returned as they are; if ctx is done first, Get
// returns an error wrapping ctx.Err().
//
// A hit does not allocate. Since load may outlive the call (it runs on a
// goroutine of its own), a closure passed as load escapes, and Go
// allocates it in the caller if it captures variables; a function that
// captures nothing, or one made once and reused, costs nothing.
func (c *Cache[K, V]) Get(ctx context.Context, key K, load func(context.Context) (V, error)) (V, error) {
	if v, ok, err := c.Peek(key); ok {
		return v, err
	}
	c.stats.misses.Add(1)
	return c.rcDo(ctx, key, load, false)
}

// Peek returns what Get would return without loading: ok is true if key
// holds a fresh value (err nil) or a fresh negative error (err that
// error), and counts as Get's hit or negative hit; ok false counts
// nothing. Callers whose load is a closure call Peek first, so that a hit
// does not pay for making the closure.
func (c *Cache[K, V]) Peek(key K) (v V, ok bool, err error) {
	e, ok := c.rc.Get(c.hash(key))
	if !ok || e.key != key || !c.rcFresh(e.expires) {
		return v, false, nil
	}
	if e.err != nil {
		c.stats.negativeHits.Add(1)
		return v, true, e.err
	}
	c.stats.rcHit()
	return e.val, true, nil
}

// rcFresh reports whether an entry that expires at exp is still fresh.
func (c *Cache[K, V]) rcFresh(exp time.Time) bool {
	if c.realClock {
		// Entries are stored with ristretto's TTL set to what is left of
		// theirs (rcFinish), and ristretto's Get does not return expired
		// ones: reading the clock again would only cost time.
		return true
	}
	return c.now().Before(exp)
}

// Refresh calls load whatever the cache holds, caches its result as Get
// would, and returns it: the way around the cache for callers that must
// see a fresh value. A load of key already running (for Get or an earlier
// Refresh) is superseded: its callers still get its result, but it is not
// stored, and Gets that come after Refresh wait for Refresh's load
// instead. If load fails with an error that is not negative, the cache
// keeps what it held.
func (c *Cache[K, V]) Refresh(ctx context.Context, key K, load func(context.Context) (V, error)) (V, error) {
	return c.rcDo(ctx, key, load, true)
}

// Invalidate drops key, so that the next Get loads it again. A load of key
// already running is not cancelled, but it will not store its result. When
// Invalidate returns, no Get can see the dropped entry.
func (c *Cache[K, V]) Invalidate(key K) {
	c.stats.invalidations.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if call, ok := c.calls[key]; ok {
		call.stale = true
		delete(c.calls, key)
	}
	closed := c.closed
	c.mu.Unlock()
	if !closed {
		// Del removes the entry at once. No store can bring it back: every
		// store has been applied before its wmu was released, and the
		// load in flight is stale now.
		c.rc.Del(c.hash(key))
	}
}

// Purge drops every entry. Loads already running finish for their callers
// but store nothing.
func (c *Cache[K, V]) Purge() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	c.rcDetachLocked()
	closed := c.closed
	c.mu.Unlock()
	if !closed {
		c.purging.Store(true)
		c.rc.Clear()
		c.purging.Store(false)
	}
}

// Close drops every entry and stops ristretto's goroutines. Loads already
// running finish for their callers but store nothing. After Close, Get
// calls load every time (still one load for concurrent misses) and caches
// nothing. Calling Close twice is harmless, but Close must not run
// concurrently with other methods (ristretto's Close is not safe against
// a concurrent lookup); Gets that are only waiting for a load are fine.
func (c *Cache[K, V]) Close() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	c.rcDetachLocked()
	closed := c.closed
	c.closed = true
	c.mu.Unlock()
	if !closed {
		c.purging.Store(true) // Close clears first: not evictions either
		c.rc.Close()
	}
}

// rcDetachLocked marks every load in flight stale and forgets it.
func (c *Cache[K, V]) rcDetachLocked() {
	for key, call := range c.calls {
		call.stale = true
		delete(c.calls, key)
	}
}

// Stats reports what the cache has done since New.
func (c *Cache[K, V]) Stats() ResourceStats {
	s := &c.stats
	var hits uint64
	for i := range s.hits {
		hits += s.hits[i].n.Load()
	}
	return ResourceStats{
		Hits:          hits,
		NegativeHits:  s.negativeHits.Load(),
		Misses:        s.misses.Load(),
		Loads:         s.loads.Load(),
		LoadErrors:    s.loadErrors.Load(),
		Coalesced:     s.coalesced.Load(),
		Evictions:     s.evictions.Load(),
		Invalidations: s.invalidations.Load(),
	}
}

// rcErrAbandoned is the cause of a load's context when nobody waits any
// more.
var rcErrAbandoned = errors.New("memory: every caller waiting for this load has gone")

// rcErrGoexit is the result of a load that called runtime.Goexit.
var rcErrGoexit = errors.New("memory: load called runtime.Goexit")

// rcDo joins the load of key in flight (Get) or starts a new one (Get with
// none in flight, Refresh), and waits for it.
func (c *Cache[K, V]) rcDo(ctx context.Context, key K, load func(context.Context) (V, error), refresh bool) (V, error) {
	if err := ctx.Err(); err != nil {
		var zero V
		return zero, rcCtxError(key, refresh, err)
	}
	c.mu.Lock()
	call, ok := c.calls[key]
	if ok && !refresh {
		call.waiters++
		c.mu.Unlock()
		c.stats.coalesced.Add(1)
		return c.rcWait(ctx, key, call, false)
	}
	if ok {
		call.stale = true // superseded by this Refresh
	}
	loadCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	call = &rcCall[V]{done: make(chan struct{}), cancel: cancel, waiters: 1}
	c.calls[key] = call
	c.mu.Unlock()

	c.stats.loads.Add(1)
	go c.rcLoad(loadCtx, key, call, load)
	return c.rcWait(ctx, key, call, refresh)
}

// rcWait waits for call, or for ctx; the last waiter to give up cancels the
// load.
func (c *Cache[K, V]) rcWait(ctx context.Context, key K, call *rcCall[V], refresh bool) (V, error) {
	select {
	case <-call.done:
		return call.rcResult()
	case <-ctx.Done():
	}
	select {
	case <-call.done: // both were ready: prefer the result
		return call.rcResult()
	default:
	}
	c.mu.Lock()
	call.waiters--
	abandon := call.waiters == 0 && !call.finished
	if abandon {
		call.stale = true
		if c.calls[key] == call {
			delete(c.calls, key)
		}
	}
	c.mu.Unlock()
	if abandon {
		call.cancel(rcErrAbandoned)
	}
	var zero V
	return zero, rcCtxError(key, refresh, ctx.Err())
}

func rcCtxError[K comparable](key K, refresh bool, err error) error {
	op := "get"
	if refresh {
		op = "refresh"
	}
	return fmt.Errorf("memory: %s %v: %w", op, key, err)
}

func (call *rcCall[V]) rcResult() (V, error) {
	if call.panic != nil {
		panic(call.panic)
	}
	return call.val, call.err
}

// rcLoad runs load for call, stores the result unless call has gone stale,
// and releases the waiters.
func (c *Cache[K, V]) rcLoad(ctx context.Context, key K, call *rcCall[V], load func(context.Context) (V, error)) {
	start := c.now()
	var (
		val      V
		err      error
		negative bool
		cost     = c.overhead
		returned bool
	)
	defer func() {
		if !returned {
			if r := recover(); r != nil {
				call.panic = &rcPanicError{value: r, stack: debug.Stack()}
			} else {
				err = rcErrGoexit
			}
		}
		c.rcFinish(ctx, key, call, start, val, err, negative, cost)
	}()
	val, err = load(ctx)
	// The user's functions run here too, where a panic is caught.
	if err == nil && c.cost != nil {
		cost += max(c.cost(val), 0)
	}
	negative = err != nil && c.isNegative != nil && c.isNegative(err)
	returned = true
}

func (c *Cache[K, V]) rcFinish(ctx context.Context, key K, call *rcCall[V], start time.Time, val V, err error, negative bool, cost int64) {
	call.val, call.err = val, err
	if err != nil || call.panic != nil {
		c.stats.loadErrors.Add(1)
	}
	ttl := c.ttl
	if err != nil {
		ttl = c.negTTL
	}
	keep := call.panic == nil && (err == nil || negative) && ctx.Err() == nil

	c.mu.Lock()
	call.finished = true // callers leaving from now on do not cancel it
	c.mu.Unlock()

	c.wmu.Lock()
	c.mu.Lock()
	keep = keep && !call.stale && !c.closed
	c.mu.Unlock()
	if keep {
		expires := start.Add(ttl)
		if left := expires.Sub(c.now()); left > 0 {
			e := &rcEntry[K, V]{key: key, val: val, err: err, expires: expires}
			c.rc.SetWithTTL(c.hash(key), e, cost, left)
			// ristretto admits new keys asynchronously: wait, so that the
			// callers' next Get sees the entry and a later store of this
			// key is an update rather than a second insert, which
			// ristretto would reject.
			c.rc.Wait()
		}
	}
	c.wmu.Unlock()

	c.mu.Lock()
	if c.calls[key] == call {
		delete(c.calls, key)
	}
	c.mu.Unlock()
	call.cancel(nil)
	close(call.done)
}

// rcPanicError is what the callers of a load that panicked panic with.
type rcPanicError struct {
	value any
	stack []byte
}

func (p *rcPanicError) Error() string {
	return fmt.Sprintf("memory: load panicked: %v\n\n%s", p.value, p.stack)
}

// Unwrap returns the panic value if it is an error.
func (p *rcPanicError) Unwrap() error {
	err, _ := p.value.(error)
	return err
}
