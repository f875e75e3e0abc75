package memory

import (
	"sync"
	"sync/atomic"
	"time"
)

// index holds every entry a Cache serves, by the hash of its key: the
// only place a hit looks. Reads take no lock: a hit loads the table, probes
// a few slots and loads an atomic flag, so hits on several cores do not
// contend (a sync.RWMutex's reader count would: it is one cache line that
// every reader writes), and nothing is hashed but the key, once.
//
// Writers are serialised by mu. The table is open-addressed (linear
// probing) with at most one entry per hash, as ristretto keeps one per
// hash: a key whose hash collides with another's takes its slot. A removed
// entry leaves a tombstone, so that probes for later keys still find them;
// the table is rebuilt (tombstones dropped, its size fitted to the entries)
// when live entries and tombstones fill 3/4 of it or live entries drop
// below 1/8 of it, so it costs 16 to 64 bytes per entry and each write is
// amortized O(1). A rebuild stores a new table: readers that loaded the
// old one still see its entries, and are kept from serving a removed one
// by its late flag, which every removal sets before it takes the entry
// out (and which a reader checks after finding it).
type index[K comparable, V any] struct {
	tab atomic.Pointer[table[K, V]]

	// onTimer is called when an entry's timer (see put) fires.
	onTimer func(*entry[K, V])

	mu   sync.Mutex // serialises writers; guards the fields below and entries' timers
	live int        // entries in tab
	dead int        // tombstones in tab
	held int64      // the cost of the live entries
}

type table[K comparable, V any] struct {
	slots []atomic.Pointer[entry[K, V]] // a power of two of them
	mask  uint64                        // len(slots) - 1
	tomb  *entry[K, V]                  // what a removed entry's slot holds
}

const minSlots = 8

// get returns key's entry, if the index holds one that has not been
// removed.
func (x *index[K, V]) get(h uint64, key K) *entry[K, V] {
	t := x.tab.Load()
	if t == nil {
		return nil
	}
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		e := t.slots[i].Load()
		if e == nil {
			return nil
		}
		if e.hash == h && e != t.tomb {
			if e.key != key || e.late.Load() {
				return nil
			}
			return e
		}
	}
}

// find returns the slot of the entry with hash h, or, if there is none,
// the slot a new entry with hash h goes to (the first tombstone on the
// way, or the empty slot that ends the probe) and a nil entry.
func (t *table[K, V]) find(h uint64) (uint64, *entry[K, V]) {
	free, haveFree := uint64(0), false
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		e := t.slots[i].Load()
		switch {
		case e == nil:
			if haveFree {
				return free, nil
			}
			return i, nil
		case e == t.tomb:
			if !haveFree {
				free, haveFree = i, true
			}
		case e.hash == h:
			return i, e
		}
	}
}

// put adds e, in place of the entry with e's hash if there is one, and
// starts e's timer if after is positive: onTimer(e) then runs after that
// long, unless e is removed first. If e has been removed already (its
// late flag is set: ristretto refused or evicted it while it was being
// stored), put stores nothing and removes the entry with e's hash
// instead, since e superseded it; it reports whether it stored e.
func (x *index[K, V]) put(e *entry[K, V], after time.Duration) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e.late.Load() {
		x.removeHashLocked(e.hash)
		return false
	}
	t := x.tab.Load()
	if t == nil || 4*(x.live+x.dead+1) > 3*len(t.slots) {
		t = x.rebuildLocked(x.live + 1)
	}
	i, old := t.find(e.hash)
	switch {
	case old != nil:
		retire(old)
		x.live--
		x.held -= old.cost
	case t.slots[i].Load() == t.tomb:
		x.dead--
	}
	if after > 0 {
		e.timer = time.AfterFunc(after, func() { x.onTimer(e) })
	}
	t.slots[i].Store(e)
	x.live++
	x.held += e.cost
	return true
}

// remove takes e out, if it is in, and marks it removed in any case. It
// reports whether e was in.
func (x *index[K, V]) remove(e *entry[K, V]) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	retire(e)
	t := x.tab.Load()
	if t == nil {
		return false
	}
	i, cur := t.find(e.hash)
	if cur != e {
		return false
	}
	x.removeAtLocked(t, i, e)
	return true
}

// removeHash takes out the entry with hash h, whatever its key.
func (x *index[K, V]) removeHash(h uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeHashLocked(h)
}

func (x *index[K, V]) removeHashLocked(h uint64) {
	t := x.tab.Load()
	if t == nil {
		return
	}
	if i, e := t.find(h); e != nil {
		retire(e)
		x.removeAtLocked(t, i, e)
	}
}

// removeAtLocked replaces e, retired already, in slot i of t (the current
// table) by a tombstone, and shrinks the table if it has become sparse.
func (x *index[K, V]) removeAtLocked(t *table[K, V], i uint64, e *entry[K, V]) {
	t.slots[i].Store(t.tomb)
	x.live--
	x.dead++
	x.held -= e.cost
	if len(t.slots) > minSlots && 8*x.live < len(t.slots) {
		x.rebuildLocked(x.live)
	}
}

// rebuildLocked stores a table sized for n entries (at most half full)
// holding the live entries of the current one, and returns it.
func (x *index[K, V]) rebuildLocked(n int) *table[K, V] {
	size := minSlots
	for size < 2*n {
		size *= 2
	}
	t := &table[K, V]{
		slots: make([]atomic.Pointer[entry[K, V]], size),
		mask:  uint64(size - 1),
		tomb:  new(entry[K, V]),
	}
	if old := x.tab.Load(); old != nil {
		for i := range old.slots {
			if e := old.slots[i].Load(); e != nil && e != old.tomb {
				j, _ := t.find(e.hash)
				t.slots[j].Store(e)
			}
		}
	}
	x.dead = 0
	x.tab.Store(t)
	return t
}

// clear removes every entry.
func (x *index[K, V]) clear() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if t := x.tab.Load(); t != nil {
		for i := range t.slots {
			if e := t.slots[i].Load(); e != nil && e != t.tomb {
				retire(e)
			}
		}
	}
	x.tab.Store(nil)
	x.live, x.dead, x.held = 0, 0, 0
}

// entries returns the live entries.
func (x *index[K, V]) entries() []*entry[K, V] {
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.tab.Load()
	if t == nil {
		return nil
	}
	out := make([]*entry[K, V], 0, x.live)
	for i := range t.slots {
		if e := t.slots[i].Load(); e != nil && e != t.tomb {
			out = append(out, e)
		}
	}
	return out
}

// size returns the number of live entries and their cost.
func (x *index[K, V]) size() (n int, cost int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.live, x.held
}

// retire marks e removed, so that no reader serves it, and stops its
// timer. The caller holds index.mu.
func retire[K comparable, V any](e *entry[K, V]) {
	e.late.Store(true)
	if e.timer != nil {
		e.timer.Stop()
	}
}
