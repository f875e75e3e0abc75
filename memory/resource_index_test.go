package memory

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/buildcache/buildcache/internal/testclock"
)

// The index on its own: one entry per hash, tombstones that keep later
// entries reachable, rebuilds that keep every live entry and drop the
// removed ones, and a table that shrinks when entries leave.
func TestIndex(t *testing.T) {
	var x index[string, int]
	e := func(h uint64, key string) *entry[string, int] { return &entry[string, int]{hash: h, key: key, cost: 1} }
	must := func(ok bool) {
		t.Helper()
		if !ok {
			t.Fatal("put refused a live entry")
		}
	}

	// Hashes 1, 9 and 17 share a probe sequence in 8 slots.
	a, b, c := e(1, "a"), e(9, "b"), e(17, "c")
	must(x.put(a, 0))
	must(x.put(b, 0))
	must(x.put(c, 0))
	if x.get(1, "a") != a || x.get(9, "b") != b || x.get(17, "c") != c {
		t.Fatal("an entry is not found")
	}
	if x.get(1, "b") != nil {
		t.Fatal("a hit on the hash of another key")
	}
	if !x.remove(b) || x.remove(b) {
		t.Fatal("remove did not report whether the entry was in")
	}
	if !b.late.Load() || x.get(9, "b") != nil {
		t.Fatal("a removed entry is still served")
	}
	if x.get(17, "c") != c {
		t.Fatal("an entry after a tombstone is lost")
	}

	// A key with a hash already held takes its slot.
	a2 := e(1, "a2")
	must(x.put(a2, 0))
	if !a.late.Load() || x.get(1, "a") != nil || x.get(1, "a2") != a2 {
		t.Fatal("the entry of a colliding key was not replaced")
	}
	if n, held := x.size(); n != 2 || held != 2 {
		t.Fatalf("size = %d, %d; want 2 entries of cost 1", n, held)
	}

	// A late entry is not stored, and what it superseded goes.
	late := e(17, "c")
	late.late.Store(true)
	if x.put(late, 0) || x.get(17, "c") != nil || !c.late.Load() {
		t.Fatal("a late entry was stored, or the entry it superseded kept")
	}

	// Grow to 1000 entries, then remove most: every live entry stays
	// reachable through the rebuilds, and the table shrinks.
	all := map[uint64]*entry[string, int]{}
	for i := range uint64(1000) {
		h := i * 0x9e3779b97f4a7c15
		all[h] = e(h, fmt.Sprint(i))
		must(x.put(all[h], 0))
	}
	grown := len(x.tab.Load().slots)
	for h, en := range all {
		if h%10 != 0 {
			x.remove(en)
			delete(all, h)
		}
	}
	for h, en := range all {
		if x.get(h, en.key) != en {
			t.Fatalf("entry %s lost", en.key)
		}
	}
	if n, _ := x.size(); n != len(all)+1 { // and a2
		t.Fatalf("%d entries, want %d", n, len(all)+1)
	}
	if shrunk := len(x.tab.Load().slots); shrunk >= grown || shrunk > 8*(len(all)+1) {
		t.Fatalf("%d slots for %d entries (%d at most before)", shrunk, len(all)+1, grown)
	}
	x.clear()
	if x.get(1, "a2") != nil || !a2.late.Load() {
		t.Fatal("clear kept an entry")
	}
}

// With the real clock, Invalidate, Refresh and Purge take effect at once,
// and an entry leaves the index by its timer before its TTL ends: without
// a ristretto policy, that is an eviction.
func TestResourceIndexRealClock(t *testing.T) {
	ctx := t.Context()
	c := rcNew[string, int](t, WithTTL(time.Hour))
	val := 1
	load := func(context.Context) (int, error) { return val, nil }
	get := func() int {
		t.Helper()
		v, err := c.Get(ctx, "k", load)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	get()
	val = 2
	if v := get(); v != 1 {
		t.Fatalf("hit = %d, want 1", v)
	}
	c.Invalidate("k")
	if v := get(); v != 2 {
		t.Fatalf("Get after Invalidate = %d, want 2", v)
	}
	val = 3
	if v, err := c.Refresh(ctx, "k", load); err != nil || v != 3 {
		t.Fatalf("Refresh = %d, %v", v, err)
	}
	if v := get(); v != 3 {
		t.Fatalf("Get after Refresh = %d, want 3: the index kept the replaced entry", v)
	}
	val = 4
	c.Purge()
	if v := get(); v != 4 {
		t.Fatalf("Get after Purge = %d, want 4", v)
	}
	if s := c.Stats(); s.Loads != 4 || s.Evictions != 0 {
		t.Fatalf("%d loads, %d evictions; want 4 and 0", s.Loads, s.Evictions)
	}

	for _, ttl := range []time.Duration{50 * time.Millisecond, 5 * time.Millisecond} { // with and without a margin
		short := rcNew[string, int](t, WithTTL(ttl))
		if _, err := short.Get(ctx, "k", load); err != nil {
			t.Fatal(err)
		}
		// The timer removes the entry, then counts it: wait for both.
		rcWaitFor(t, "the entry's timer", func() bool {
			n, _ := short.idx.size()
			return n == 0 && short.Stats().Evictions > 0
		})
		if s := short.Stats(); s.Evictions != 1 {
			t.Fatalf("TTL %v: %d evictions, want 1 (the expired entry)", ttl, s.Evictions)
		}
		if rcCached(t, short, "k") {
			t.Fatalf("TTL %v: an expired entry was served", ttl)
		}
	}
}

// A cache makes no ristretto policy while it holds little; it makes one
// once it holds 1 MiB, with counters for the entries it holds, grows it
// as entries come (keeping them all), and drops it on Purge.
func TestResourcePolicyFollowsEntries(t *testing.T) {
	ctx := t.Context()
	clock := testclock.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	const entryCost = 1 << 10
	c := rcNew[int, int](t, WithClock(clock.Now), WithTTL(time.Hour),
		WithCost(func(int) int64 { return entryCost - int64(c0overhead[int, int]()) }))
	put := func(from, to int) {
		t.Helper()
		for k := from; k < to; k++ {
			if _, err := c.Get(ctx, k, func(context.Context) (int, error) { return k, nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	counters := func() int64 {
		if p := c.pol.Load(); p != nil {
			return p.counters
		}
		return 0
	}

	put(0, 1000) // 1000 KiB
	if n := counters(); n != 0 {
		t.Fatalf("a policy of %d counters for less than 1 MiB", n)
	}
	put(1000, 1100)
	first := counters()
	if first < minCounters || first > 40*1100 {
		t.Fatalf("first policy: %d counters for about 1025 entries", first)
	}
	put(1100, 6000)
	if n := counters(); n <= first {
		t.Fatalf("the policy did not grow: %d counters for 6000 entries", n)
	}
	for k := range 6000 {
		if v, ok, err := c.Peek(k); !ok || err != nil || v != k {
			t.Fatalf("Peek(%d) = %d, %v, %v after the policy grew", k, v, ok, err)
		}
	}
	if s := c.Stats(); s.Evictions != 0 {
		t.Fatalf("%d evictions under the bound", s.Evictions)
	}
	c.Purge()
	if n := counters(); n != 0 {
		t.Fatalf("Purge kept a policy of %d counters", n)
	}
	put(0, 10)
	if v, ok, _ := c.Peek(5); !ok || v != 5 {
		t.Fatal("nothing cached after Purge")
	}
}

// c0overhead is the fixed cost a cache of the given types with the fake
// clock counts per entry, so that tests can make entries of a round cost.
func c0overhead[K comparable, V any]() int64 {
	c, _ := New[K, V](WithClock(time.Now))
	return c.overhead
}

// Hits, misses, invalidations and stores on many keys while the cache
// makes, grows and uses its policy under a bound that evicts: for the
// race detector, and a hit always serves its own key's value. Close runs
// while Gets do.
func TestResourceConcurrentPolicy(t *testing.T) {
	const (
		workers = 4
		keys    = 3000
	)
	c, err := New[int, int](WithMaxCost(2<<20), WithCost(func(int) int64 { return 1 << 10 }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range 3 * keys {
				k := (i*7 + w*keys/workers) % keys
				if i%50 == w {
					c.Invalidate(k)
					continue
				}
				v, err := c.Get(ctx, k, func(context.Context) (int, error) { return k, nil })
				if err != nil || v != k {
					t.Errorf("Get(%d) = %d, %v", k, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := c.Stats()
	if s.Hits == 0 || s.Evictions == 0 || c.pol.Load() == nil {
		t.Errorf("stats %+v, policy %v: want hits, evictions and a policy", s, c.pol.Load())
	}
	wg.Go(func() {
		for k := range keys {
			c.Get(ctx, k, func(context.Context) (int, error) { return k, nil })
		}
	})
	c.Close()
	wg.Wait()
}

// Admission keeps its quality: once the cache is full, keys that keep
// being read stay while a scan of keys read once passes through (TinyLFU
// counts every miss and a sample of hits). ristretto applies its counts
// asynchronously, a little behind the reads, as it always did: under the
// race detector too far behind a burst of reads to rank keys at all (30
// of 50 kept, as with no counts; so before this branch too), so the test
// runs without it: go test -run AdmissionResistsScans ./memory/
func TestResourceAdmissionResistsScans(t *testing.T) {
	if raceEnabled {
		t.Skip("ristretto's counts trail a burst of reads too far under the race detector")
	}
	ctx := t.Context()
	const (
		entryCost = 1 << 10
		room      = 100 // entries the bound holds
		hot       = 50
	)
	c := rcNew[int, int](t, WithTTL(time.Hour), WithMaxCost(room*entryCost),
		WithCost(func(int) int64 { return entryCost - c0overhead[int, int]() }))
	get := func(k int) {
		if _, err := c.Get(ctx, k, func(context.Context) (int, error) { return k, nil }); err != nil {
			t.Fatal(err)
		}
	}
	for range 400 {
		for k := range hot {
			get(k)
		}
	}
	for i := range 2000 {
		get(1000 + i) // the scan
		get(i % hot)
	}
	kept := 0
	for k := range hot {
		if _, ok, _ := c.Peek(k); ok {
			kept++
		}
	}
	if kept < hot*8/10 {
		t.Fatalf("%d of %d hot keys kept after a scan of 2000 cold ones (stats %+v)", kept, hot, c.Stats())
	}
}
