package memory

import (
	"sync"
	"sync/atomic"
	"time"
)

// The front is a map of hot entries in front of ristretto, used with the
// real clock only: a hit there costs a map lookup and an atomic load,
// instead of ristretto's hashing of the key, its sharded lock, its access
// buffer and its time.Now (which took more than half of a hit).
//
// It holds only entries ristretto holds too, so the cost bound is
// ristretto's: an entry enters the front on a ristretto hit, and leaves
// it when ristretto evicts it (OnEvict), when its key is stored again,
// invalidated or purged, and when its timer fires, frontMargin before its
// TTL ends. The timer is what replaces reading the clock on every hit:
// from then on the entry is read through ristretto, which checks its
// expiry against the clock. A timer delayed by more than frontMargin (a
// machine too busy to run it) lets a front hit serve an entry late by
// that delay.
//
// A promotion that read ristretto before a writer changed it must not
// bring the old entry back: every removal increments frontEpoch under
// frontMu, and a promotion stores only if the epoch it read before
// reading ristretto is still current.
//
// The map is a plain map under a RWMutex: a sync.Map hashes its keys as
// interfaces (runtime.typehash, field by field), which cost more than
// the lock does.
type front[K comparable, V any] struct {
	rw    sync.RWMutex // guards m
	m     map[K]*entry[K, V]
	mu    sync.Mutex // serialises promotions and removals, with epoch
	epoch atomic.Uint64
}

// frontMargin is how long before its TTL ends an entry leaves the front.
// An entry with less than twice that left is not promoted.
const frontMargin = 10 * time.Millisecond

// frontSample is how often (1 in frontSample) a front hit is also told to
// ristretto, whose admission policy ranks keys by how often they are read:
// without it, hot keys read only through the front would look cold.
const frontSample = 64

// hot returns key's front entry, if it has one that is not expired.
func (f *front[K, V]) hot(key K) (*entry[K, V], bool) {
	f.rw.RLock()
	e, ok := f.m[key]
	f.rw.RUnlock()
	if !ok || e.late.Load() {
		return nil, false
	}
	return e, true
}

// promote puts e, which ristretto returned for key after the epoch was
// epoch, in the front, unless a removal came in between or e expires too
// soon.
func (c *Cache[K, V]) promote(key K, e *entry[K, V], epoch uint64) {
	left := time.Until(e.expires) - frontMargin
	if left < frontMargin {
		return
	}
	f := &c.front
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.epoch.Load() != epoch {
		return
	}
	if f.m[key] == e {
		return // promoted by another reader meanwhile
	}
	e.timer = time.AfterFunc(left, func() { c.demote(e) })
	f.set(key, e)
}

// demote removes e from the front, if it is there.
func (c *Cache[K, V]) demote(e *entry[K, V]) {
	f := &c.front
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch.Add(1)
	e.late.Store(true)
	if f.m[e.key] == e {
		f.set(e.key, nil)
		e.timer.Stop()
	}
}

// unfront removes key's entry from the front, whichever it is: called
// after key was stored again or invalidated in ristretto.
func (c *Cache[K, V]) unfront(key K) {
	f := &c.front
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch.Add(1)
	if e, ok := f.m[key]; ok {
		e.late.Store(true) // before the delete: a reader holding e sees it
		f.set(key, nil)
		e.timer.Stop()
	}
}

// unfrontAll empties the front: called after ristretto was cleared.
func (c *Cache[K, V]) unfrontAll() {
	f := &c.front
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch.Add(1)
	for _, e := range f.m {
		e.late.Store(true)
		e.timer.Stop()
	}
	f.rw.Lock()
	f.m = nil
	f.rw.Unlock()
}

// set stores e for key, or deletes key if e is nil. The caller holds mu.
func (f *front[K, V]) set(key K, e *entry[K, V]) {
	f.rw.Lock()
	defer f.rw.Unlock()
	if e == nil {
		delete(f.m, key)
		return
	}
	if f.m == nil {
		f.m = make(map[K]*entry[K, V])
	}
	f.m[key] = e
}
