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

// The policy's admission counters: ten per entry held (as ristretto
// advises), in steps of four, from minCounters up to ten per entry that
// fits the bound if entries cost meanEntryCost, at most maxCounters.
const (
	minCounters   = 1 << 12
	maxCounters   = 1 << 20
	meanEntryCost = 1 << 10
)

// smallHeld is how much a cache holds, at most (and at most an eighth of
// its bound), before it makes its ristretto policy: below that, every
// entry fits and none needs to be chosen, and the policy has the other
// seven eighths or more of the bound to learn which keys are read often
// before it must choose.
const smallHeld = 1 << 20

// Per-entry costs beyond the entry itself, counted in its fixed size:
// its timer (time.AfterFunc's Timer and closure) and its index slots.
const (
	timerSize = 144
	slotsSize = 32
)

// Cache is a read-through cache.ResourceCache: each entry lives for a TTL,
// the entries together stay under a cost bound, and identical concurrent
// misses cause a single load. Create it with New and release it with
// Close. All methods are safe for concurrent use, Close included.
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
// next Get, unless the cache declined to keep it (it was full and the key
// was not worth a place, or the value alone exceeds the bound). That only
// costs a reload.
//
// A load that panics makes every caller waiting for it panic with an error
// that holds the original value and the load's stack; nothing is stored,
// and the next Get loads again.
//
// # Hits, TTLs and the bound
//
// Every entry is in an index that hits read without a lock (see index),
// so a hit costs hashing the key, a probe and a few atomic loads, on any
// number of cores at once. With the real clock a hit does not read the
// clock either: each entry has a timer that takes it out of the index
// 10ms before its TTL ends (an entry with less than 20ms to live is
// checked against the clock on every hit instead). A timer delayed by
// more than 10ms (a machine so busy that it runs timers that late) lets a
// hit serve an entry late by that delay; with WithClock, every hit reads
// the clock.
//
// The bound is kept by ristretto, which the cache makes only once it
// holds 1 MiB (or an eighth of its bound, if less): until then every
// entry fits and none has to be chosen, and the cache costs nothing but
// its entries. From then on ristretto decides which entries to admit and
// evict (TinyLFU admission, sampled LFU eviction), counting how often
// keys are read from every miss and one hit in 64. Its counters are
// sized from the entries held (ten per entry), and when the entries
// outgrow them the cache makes a ristretto four times bigger and moves
// its entries there, so an empty or small cache does not pay for
// counters sized for the whole bound.
//
// # Invalidation
//
// Invalidate, Refresh and Purge are ordered with loads: a load that started
// before one of them does not store its result afterwards (its own callers
// still receive it), and a Get that comes after it does not join the older
// load.
type Cache[K comparable, V any] struct {
	idx        index[K, V]
	hash       func(K) uint64
	now        func() time.Time
	realClock  bool // now is time.Now
	ttl        time.Duration
	negTTL     time.Duration
	isNegative func(error) bool
	cost       func(V) int64 // nil: the entry's fixed size only
	overhead   int64         // the fixed size of an entry, in bytes
	maxCost    int64
	small      int64 // what the cache holds before it makes a policy
	counters   int64 // the most counters a policy gets

	// loads shares a load among concurrent misses and tells a load that
	// Invalidate, Refresh or Purge has overtaken it (flight.Work.Publish).
	loads flight.Group[K, loaded[V]]

	// wmu orders every write (a store, a removal, a change of policy) with
	// the staleness check that precedes a store, and guards closed.
	wmu    sync.Mutex
	closed bool

	// pol is the ristretto policy, nil until the cache holds enough to
	// need one; it changes under wmu and smu. smu keeps a policy from
	// being closed while a hit tells it about a read.
	pol atomic.Pointer[policy[K, V]]
	smu sync.RWMutex

	stats counters
}

var _ cache.ResourceCache[string, int] = (*Cache[string, int])(nil)

// entry is what the index and ristretto hold: the key (ristretto knows
// only its hash), and either a value or a negative error, until expires.
// The fields a hit reads come first.
type entry[K comparable, V any] struct {
	hash  uint64
	key   K
	late  atomic.Bool // removed from the index, or about to expire: not to be served
	clock bool        // check expires against the clock on every hit
	val   V
	err   error // non-nil: a negative entry

	expires time.Time
	cost    int64
	timer   *time.Timer // takes the entry out of the index; guarded by index.mu
}

// policy is a ristretto cache holding the same entries as the index, for
// its cost bound, admission and eviction; the index is what hits read.
type policy[K comparable, V any] struct {
	rc       *ristretto.Cache[uint64, *entry[K, V]]
	counters int64
	retired  atomic.Bool // replaced or dropped: its callbacks do nothing
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
// time.Now. K can be any comparable type: entries are found by a hash of
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
		overhead:   int64(unsafe.Sizeof(entry[K, V]{})) + slotsSize,
		maxCost:    o.maxCost,
		small:      min(o.maxCost/8, smallHeld),
		counters:   min(max(10*o.maxCost/meanEntryCost, minCounters), maxCounters),
	}
	if c.realClock {
		c.now = time.Now
		c.overhead += timerSize
	}
	if o.cost != nil {
		cost, ok := o.cost.(func(V) int64)
		if !ok {
			return nil, fmt.Errorf("memory: WithCost: the cost function is a %T, but the cache holds %v values (want a func(%[2]v) int64)",
				o.cost, reflect.TypeFor[V]())
		}
		c.cost = cost
	}
	if o.hash != nil {
		hash, ok := o.hash.(func(K) uint64)
		if !ok {
			return nil, fmt.Errorf("memory: WithHash: the hash function is a %T, but the cache's keys are %v (want a func(%[2]v) uint64)",
				o.hash, reflect.TypeFor[K]())
		}
		c.hash = hash
	} else {
		seed := maphash.MakeSeed()
		c.hash = func(k K) uint64 { return maphash.Comparable(seed, k) }
	}
	c.idx.onTimer = c.expire
	return c, nil
}

// newPolicy makes a ristretto cache with the given number of counters.
// What it evicts or refuses leaves the index too, and counts as an
// eviction, until the policy is retired.
func (c *Cache[K, V]) newPolicy(counters int64) (*policy[K, V], error) {
	p := &policy[K, V]{counters: counters}
	drop := func(it *ristretto.Item[*entry[K, V]]) {
		if !p.retired.Load() && it.Value != nil {
			c.stats.evictions.Add(1)
			c.idx.remove(it.Value)
		}
	}
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *entry[K, V]]{
		NumCounters: counters,
		MaxCost:     c.maxCost,
		BufferItems: 64,
		// The key already is a hash. A conflict hash cannot be derived
		// from the user's key here, and is not needed: a hit is confirmed
		// by comparing the key stored in the entry. A collision only makes
		// two keys take turns in one slot.
		KeyToHash: func(h uint64) (uint64, uint64) { return h, 0 },
		OnEvict:   drop,
		OnReject:  drop,
	})
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	p.rc = rc
	return p, nil
}

// repolicy replaces the policy by one with the given number of counters
// holding every entry of the index, or makes the first one. The caller
// holds wmu, so nothing is stored meanwhile.
func (c *Cache[K, V]) repolicy(counters int64) {
	p, err := c.newPolicy(counters)
	if err != nil {
		return // unreachable: New checked the bound; keep the policy there is
	}
	now := c.now()
	for i, e := range c.idx.entries() {
		left := e.expires.Sub(now)
		if left <= 0 {
			c.idx.remove(e)
			continue
		}
		p.rc.SetWithTTL(e.hash, e, e.cost, left)
		if i%1024 == 1023 {
			p.rc.Wait() // ristretto drops a set when its buffer (32Ki) is full
		}
	}
	p.rc.Wait()
	c.setPolicy(p)
}

// setPolicy makes p (nil for none) the policy, and closes the one it
// replaces, whose evictions are then not counted or acted on. The caller
// holds wmu.
func (c *Cache[K, V]) setPolicy(p *policy[K, V]) {
	old := c.pol.Load()
	if old == nil && p == nil {
		return
	}
	if old != nil {
		old.retired.Store(true)
	}
	c.smu.Lock()
	c.pol.Store(p)
	c.smu.Unlock()
	if old != nil {
		old.rc.Close()
	}
}

// expire runs when e's timer fires: e leaves the index. Without a policy
// the entry is gone with it, an eviction; with one, ristretto drops it
// at its TTL and counts it then.
func (c *Cache[K, V]) expire(e *entry[K, V]) {
	if c.idx.remove(e) && c.pol.Load() == nil {
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
	c.touch(c.hash(key)) // a miss is a read too, for the admission policy
	return c.do(ctx, key, load, false)
}

// Peek returns what Get would return without loading: ok is true if key
// holds a fresh value (err nil) or a fresh negative error (err that
// error), and counts as Get's hit or negative hit; ok false counts
// nothing. Callers whose load is a closure call Peek first, so that a hit
// does not pay for making the closure.
func (c *Cache[K, V]) Peek(key K) (v V, ok bool, err error) {
	h := c.hash(key)
	e := c.idx.get(h, key)
	if e == nil || e.clock && !c.now().Before(e.expires) {
		return v, false, nil
	}
	r := rand.Uint32() // one draw for the sample and the hit's stripe
	if r%policySample == 0 {
		c.touch(h)
	}
	if e.err != nil {
		c.stats.negativeHits.Add(1)
		return v, true, e.err
	}
	c.stats.hitIn(r / policySample)
	return e.val, true, nil
}

// policySample is how often (1 in policySample) a hit is told to
// ristretto, whose admission policy ranks keys by how often they are
// read: often enough to rank them, rarely enough to cost a hit nothing.
const policySample = 64

// touch tells the policy, if there is one, that the key with hash h was
// read.
func (c *Cache[K, V]) touch(h uint64) {
	c.smu.RLock()
	if p := c.pol.Load(); p != nil {
		p.rc.Get(h)
	}
	c.smu.RUnlock()
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
	h := c.hash(key)
	if p := c.pol.Load(); p != nil {
		// Del removes the entry at once. No store can bring it back: every
		// store has been applied before its wmu was released, and the
		// load in flight is stale now.
		p.rc.Del(h)
	}
	c.idx.removeHash(h)
}

// Purge drops every entry, and the ristretto policy with them: the cache
// is as small as a new one. Loads already running finish for their
// callers but store nothing.
func (c *Cache[K, V]) Purge() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.loads.ForgetAll()
	c.setPolicy(nil)
	c.idx.clear()
}

// Close drops every entry and stops ristretto's goroutines. Loads already
// running finish for their callers but store nothing. After Close, Get
// calls load every time (still one load for concurrent misses) and caches
// nothing. Calling Close twice is harmless, and so are calls made while
// or after it runs: they see a closed cache.
func (c *Cache[K, V]) Close() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.loads.ForgetAll()
	c.closed = true
	c.setPolicy(nil)
	c.idx.clear()
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
	left := expires.Sub(c.now())
	if left <= 0 {
		return
	}
	e := &entry[K, V]{hash: c.hash(key), key: key, val: l.val, err: err, expires: expires, cost: l.cost}
	// Without a timer, a hit checks the clock. With one, the entry leaves
	// the index timerMargin before it expires, so that a timer running a
	// little late does not serve it after its TTL. An entry too short-lived
	// for that has a timer all the same, to leave the index once expired.
	var after time.Duration
	switch {
	case !c.realClock:
		e.clock = true
	case left >= 2*timerMargin:
		after = left - timerMargin
	default:
		e.clock, after = true, left
	}

	p := c.pol.Load()
	n, held := c.idx.size()
	switch {
	case l.cost > c.maxCost:
		// What no bound can hold is refused, as ristretto does, and the
		// value it supersedes goes.
		c.stats.evictions.Add(1)
		if p != nil {
			p.rc.Del(e.hash)
		}
		c.idx.removeHash(e.hash)
		return
	case p == nil && held+l.cost > c.small:
		c.repolicy(countersFor(n+1, c.counters))
	case p != nil && int64(n) >= p.counters/10 && p.counters < c.counters:
		c.repolicy(min(4*p.counters, c.counters))
	}
	if p = c.pol.Load(); p != nil {
		if !p.rc.SetWithTTL(e.hash, e, l.cost, left) {
			return // dropped: cannot happen, as every set waits
		}
		// ristretto admits new keys asynchronously: wait, so that it has
		// admitted or refused e (and evicted for it) before e is in the
		// index, and a later store of this key is an update rather than a
		// second insert, which ristretto would reject.
		p.rc.Wait()
	}
	c.idx.put(e, after)
}

// timerMargin is how long before its TTL ends an entry leaves the index
// with the real clock.
const timerMargin = 10 * time.Millisecond

// countersFor is the number of counters a new policy gets for n entries:
// ten per entry for four times n, from minCounters to most.
func countersFor(n int, most int64) int64 {
	return min(max(40*int64(n), minCounters), most)
}
