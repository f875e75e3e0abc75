package memory

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/flight"
)

// meanEntryCost is the mean entry cost New assumes when it sizes
// ristretto's admission counters: ten per entry expected to fit (as
// ristretto advises), between 4096 and 1<<20 counters (2 MiB or so).
const meanEntryCost = 1 << 10

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
// late ristretto removes it, save with the real clock on a machine so busy
// that the timer taking a hot entry out of the front 10ms before its TTL
// ends runs later than that (see front).
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
	store      *ristretto.Cache[uint64, *entry[K, V]]
	hash       func(K) uint64
	now        func() time.Time
	realClock  bool // now is time.Now
	ttl        time.Duration
	negTTL     time.Duration
	isNegative func(error) bool
	cost       func(V) int64 // nil: the entry's fixed size only
	overhead   int64         // the fixed size of an entry, in bytes

	// loads shares a load among concurrent misses and tells a load that
	// Invalidate, Refresh or Purge has overtaken it (flight.Work.Publish).
	loads flight.Group[K, loaded[V]]

	// wmu orders every write to store (a store and its Wait, Del, Clear,
	// Close) with the staleness check that precedes a store, and guards
	// closed.
	wmu     sync.Mutex
	closed  bool
	purging atomic.Bool // Clear is running: its removals are not evictions

	front front[K, V] // hot entries, with the real clock only: see front

	stats counters
}

var _ cache.ResourceCache[string, int] = (*Cache[string, int])(nil)

// entry is what ristretto holds: the key (ristretto knows only its hash),
// and either a value or a negative error, until expires.
type entry[K comparable, V any] struct {
	key     K
	val     V
	err     error // non-nil: a negative entry
	expires time.Time

	late  atomic.Bool // out of the front, or never in it: read through ristretto
	timer *time.Timer // takes the entry out of the front; guarded by front.mu
}

// loaded is what a load hands from its goroutine to publish: the value
// and what was worked out about it there, where a panic is caught.
type loaded[V any] struct {
	val      V
	start    time.Time // the TTL counts from here
	cost     int64
	negative bool // the error is to be cached
}

// New returns an empty Cache configured by opts. Without options, entries
// live for 30s, the cache holds at most 64 MiB by the default cost
// estimate (see WithCost), errors are not cached and the clock is
// time.Now. K can be any comparable type: ristretto is keyed by a hash of
// the key with a seed of this cache's own, and a hit compares the key.
func New[K comparable, V any](opts ...Option) (*Cache[K, V], error) {
	o := options{ttl: defaultTTL, maxCost: defaultMaxCost}
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
		overhead:   int64(unsafe.Sizeof(entry[K, V]{})),
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

	store, err := ristretto.NewCache(&ristretto.Config[uint64, *entry[K, V]]{
		NumCounters: min(max(10*o.maxCost/meanEntryCost, 1<<12), 1<<20),
		MaxCost:     o.maxCost,
		BufferItems: 64,
		// The key already is a hash. A conflict hash cannot be derived
		// from the user's key here, and is not needed: a hit is confirmed
		// by comparing the key stored in the entry. A collision only makes
		// two keys take turns in one slot.
		KeyToHash: func(h uint64) (uint64, uint64) { return h, 0 },
		OnEvict: func(it *ristretto.Item[*entry[K, V]]) {
			c.countEviction()
			if c.realClock && it.Value != nil {
				c.demote(it.Value)
			}
		},
		OnReject: func(*ristretto.Item[*entry[K, V]]) { c.countEviction() },
	})
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	c.store = store
	return c, nil
}

func (c *Cache[K, V]) countEviction() {
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
	return c.do(ctx, key, load, false)
}

// Peek returns what Get would return without loading: ok is true if key
// holds a fresh value (err nil) or a fresh negative error (err that
// error), and counts as Get's hit or negative hit; ok false counts
// nothing. Callers whose load is a closure call Peek first, so that a hit
// does not pay for making the closure.
func (c *Cache[K, V]) Peek(key K) (v V, ok bool, err error) {
	if c.realClock {
		if e, ok := c.front.hot(key); ok {
			r := rand.Uint32() // one draw for the sample and the hit's stripe
			if r%frontSample == 0 {
				c.store.Get(c.hash(key)) // for the admission policy's counts
			}
			if e.err != nil {
				c.stats.negativeHits.Add(1)
				return v, true, e.err
			}
			c.stats.hitIn(r / frontSample)
			return e.val, true, nil
		}
	}
	epoch := c.front.epoch.Load()
	e, ok := c.store.Get(c.hash(key))
	if !ok || e.key != key || !c.fresh(e.expires) {
		return v, false, nil
	}
	if c.realClock {
		c.promote(key, e, epoch)
	}
	return c.answer(e)
}

// answer returns what a fresh entry holds, counting the hit.
func (c *Cache[K, V]) answer(e *entry[K, V]) (v V, ok bool, err error) {
	if e.err != nil {
		c.stats.negativeHits.Add(1)
		return v, true, e.err
	}
	c.stats.hit()
	return e.val, true, nil
}

// fresh reports whether an entry that expires at exp is still fresh.
func (c *Cache[K, V]) fresh(exp time.Time) bool {
	if c.realClock {
		// Entries are stored with ristretto's TTL set to what is left of
		// theirs (publish), and ristretto's Get does not return expired
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
	return c.do(ctx, key, load, true)
}

// Invalidate drops key, so that the next Get loads it again. A load of key
// already running is not cancelled, but it will not store its result. When
// Invalidate returns, no Get can see the dropped entry.
func (c *Cache[K, V]) Invalidate(key K) {
	c.stats.invalidations.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.loads.Forget(key)
	if !c.closed {
		// Del removes the entry at once. No store can bring it back: every
		// store has been applied before its wmu was released, and the
		// load in flight is stale now.
		c.store.Del(c.hash(key))
	}
	c.unfront(key)
}

// Purge drops every entry. Loads already running finish for their callers
// but store nothing.
func (c *Cache[K, V]) Purge() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.loads.ForgetAll()
	if !c.closed {
		c.purging.Store(true)
		c.store.Clear()
		c.purging.Store(false)
	}
	c.unfrontAll()
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
	c.loads.ForgetAll()
	if !c.closed {
		c.closed = true
		c.purging.Store(true) // Close clears first: not evictions either
		c.store.Close()
	}
	c.unfrontAll()
}

// do joins the load of key in flight (Get) or starts a new one (Get with
// none in flight, Refresh), and waits for it.
func (c *Cache[K, V]) do(ctx context.Context, key K, load func(context.Context) (V, error), refresh bool) (V, error) {
	var zero V
	if err := ctx.Err(); err != nil {
		return zero, ctxError(key, refresh, err)
	}
	r := c.loads.Run(ctx, key, flight.Work[loaded[V]]{
		Fn: func(ctx context.Context) (loaded[V], error) { return c.load(ctx, load) },
		Publish: func(l loaded[V], err error, current func() bool) {
			c.publish(key, l, err, current)
		},
		Supersede: refresh,
		Joined:    c.countCoalesced,
	})
	if r.Left {
		return zero, ctxError(key, refresh, ctx.Err())
	}
	return r.Val.val, r.Err
}

func (c *Cache[K, V]) countCoalesced() { c.stats.coalesced.Add(1) }

func ctxError[K comparable](key K, refresh bool, err error) error {
	op := "get"
	if refresh {
		op = "refresh"
	}
	return fmt.Errorf("memory: %s %v: %w", op, key, err)
}

// load runs on the load's goroutine: it calls the user's load, and the
// user's cost and isNegative functions on its result, where flight catches
// a panic in any of them.
func (c *Cache[K, V]) load(ctx context.Context, load func(context.Context) (V, error)) (l loaded[V], err error) {
	c.stats.loads.Add(1)
	returned := false
	defer func() {
		if !returned { // panicked or called runtime.Goexit
			c.stats.loadErrors.Add(1)
		}
	}()
	l.start = c.now()
	l.val, err = load(ctx)
	l.cost = c.overhead
	if err == nil && c.cost != nil {
		l.cost += max(c.cost(l.val), 0)
	}
	l.negative = err != nil && c.isNegative != nil && c.isNegative(err)
	returned = true
	return l, err
}

// publish stores a load's result, unless the load has gone stale (current
// reports false) or the result is an error not to be cached. It runs
// before the load's callers get the result, so their next Get sees it.
func (c *Cache[K, V]) publish(key K, l loaded[V], err error, current func() bool) {
	ttl := c.ttl
	if err != nil {
		c.stats.loadErrors.Add(1)
		if !l.negative {
			return
		}
		ttl = c.negTTL
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed || !current() {
		return
	}
	expires := l.start.Add(ttl)
	if left := expires.Sub(c.now()); left > 0 {
		e := &entry[K, V]{key: key, val: l.val, err: err, expires: expires}
		c.store.SetWithTTL(c.hash(key), e, l.cost, left)
		// ristretto admits new keys asynchronously: wait, so that the
		// callers' next Get sees the entry and a later store of this key
		// is an update rather than a second insert, which ristretto would
		// reject.
		c.store.Wait()
		if c.realClock {
			c.unfront(key) // the entry it replaced, if promoted
		}
	}
}
