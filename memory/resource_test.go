package memory

// These tests are in package memory, not memory_test, so that one of them
// can force hash collisions; the rest use only the exported API. Helpers
// start with rc, for ResourceCache.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/flight"
	"github.com/buildcache/buildcache/internal/testclock"
)

// rcLoader counts its calls and returns what it is told to.
type rcLoader[V any] struct {
	calls atomic.Int64
	val   V
	err   error
}

func (l *rcLoader[V]) load(context.Context) (V, error) {
	l.calls.Add(1)
	return l.val, l.err
}

func rcNew[K comparable, V any](t *testing.T, opts ...Option) *Cache[K, V] {
	t.Helper()
	c, err := New[K, V](opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// rcWaitFor spins until cond holds. It is for conditions that other
// goroutines make true promptly (a waiter joining a load); it fails the test
// rather than hang if they do not.
func rcWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// rcCached reports whether c answers key from memory, without storing
// anything: the probe's load fails with an error that is never cached.
func rcCached[K comparable, V any](t *testing.T, c *Cache[K, V], key K) bool {
	t.Helper()
	errProbe := errors.New("probe")
	_, err := c.Get(t.Context(), key, func(context.Context) (V, error) {
		var zero V
		return zero, errProbe
	})
	return !errors.Is(err, errProbe)
}

func TestResourceGetHitMiss(t *testing.T) {
	ctx := t.Context()
	c := rcNew[string, string](t)
	a := &rcLoader[string]{val: "A"}
	b := &rcLoader[string]{val: "B"}

	for i, step := range []struct {
		key    string
		loader *rcLoader[string]
		want   string
		loads  int64
	}{
		{"a", a, "A", 1}, // miss
		{"a", a, "A", 1}, // hit
		{"b", b, "B", 1}, // another key: miss
		{"a", a, "A", 1}, // still a hit
		{"b", b, "B", 1},
	} {
		got, err := c.Get(ctx, step.key, step.loader.load)
		if err != nil || got != step.want {
			t.Fatalf("step %d: Get(%q) = %q, %v; want %q", i, step.key, got, err, step.want)
		}
		if n := step.loader.calls.Load(); n != step.loads {
			t.Fatalf("step %d: load of %q called %d times, want %d", i, step.key, n, step.loads)
		}
	}
	if s := c.Stats(); s.Hits != 3 || s.Misses != 2 || s.Loads != 2 {
		t.Errorf("Stats = %+v, want 3 hits, 2 misses, 2 loads", s)
	}
}

// Peek answers from the cache only: never loads, counts a miss as nothing,
// returns cached negative errors, and stops answering when the TTL ends,
// with the real clock (ristretto's expiry) as with a fake one.
func TestResourcePeek(t *testing.T) {
	ctx := t.Context()
	clock := testclock.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		name    string
		opts    []Option
		advance func(time.Duration)
	}{
		{"fake clock", []Option{WithClock(clock.Now)}, clock.Advance},
		{"real clock", nil, time.Sleep},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const ttl = 50 * time.Millisecond
			isNotFound := func(err error) bool { return errors.Is(err, cache.ErrNotFound) }
			c := rcNew[string, string](t, append(tc.opts, WithTTL(ttl), WithNegativeTTL(ttl, isNotFound))...)
			if v, ok, err := c.Peek("a"); ok || err != nil || v != "" {
				t.Fatalf("Peek of an empty cache = %q, %v, %v; want a miss", v, ok, err)
			}
			if s := c.Stats(); s.Misses != 0 || s.Hits != 0 {
				t.Fatalf("a Peek miss was counted: %+v", s)
			}
			a := &rcLoader[string]{val: "A"}
			gone := &rcLoader[string]{err: fmt.Errorf("no such thing: %w", cache.ErrNotFound)}
			if _, err := c.Get(ctx, "a", a.load); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(ctx, "gone", gone.load); !isNotFound(err) {
				t.Fatalf("Get(gone) = %v, want the not-found error", err)
			}
			if v, ok, err := c.Peek("a"); !ok || err != nil || v != "A" {
				t.Errorf("Peek(a) = %q, %v, %v; want A, true, nil", v, ok, err)
			}
			if _, ok, err := c.Peek("gone"); !ok || !isNotFound(err) {
				t.Errorf("Peek(gone) = %v, %v; want the cached not-found error", ok, err)
			}
			if s := c.Stats(); s.Hits != 1 || s.NegativeHits != 1 || a.calls.Load() != 1 {
				t.Errorf("after two Peeks: %+v, %d loads; want 1 hit, 1 negative hit, 1 load", s, a.calls.Load())
			}
			tc.advance(2 * ttl)
			if _, ok, _ := c.Peek("a"); ok {
				t.Error("Peek(a) answered after the TTL")
			}
			if _, ok, _ := c.Peek("gone"); ok {
				t.Error("Peek(gone) answered after the negative TTL")
			}
		})
	}
}

func TestResourceTTL(t *testing.T) {
	const ttl = time.Minute
	for _, tc := range []struct {
		name     string
		during   time.Duration // how long the load takes, by the clock
		after    time.Duration // clock moves after the load
		wantLoad bool          // the next Get loads again
	}{
		{"fresh", 0, 0, false},
		{"just before expiry", 0, ttl - time.Nanosecond, false},
		{"at expiry", 0, ttl, true},
		{"long after", 0, 24 * time.Hour, true},
		{"TTL counts from the start of the load", ttl / 2, ttl/2 - time.Nanosecond, false},
		{"TTL counts from the start of the load, expired", ttl / 2, ttl / 2, true},
		{"a load slower than the TTL is not stored", ttl, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := testclock.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
			c := rcNew[string, int](t, WithTTL(ttl), WithClock(clock.Now))
			var calls atomic.Int64
			load := func(context.Context) (int, error) {
				n := calls.Add(1)
				clock.Advance(tc.during)
				return int(n), nil
			}
			if v, err := c.Get(t.Context(), "k", load); err != nil || v != 1 {
				t.Fatalf("first Get = %d, %v; want 1", v, err)
			}
			clock.Advance(tc.after)
			v, err := c.Get(t.Context(), "k", load)
			if err != nil {
				t.Fatal(err)
			}
			if gotLoad := calls.Load() == 2; gotLoad != tc.wantLoad {
				t.Fatalf("second Get loaded: %v, want %v (value %d)", gotLoad, tc.wantLoad, v)
			}
		})
	}
}

func TestResourceNegativeCaching(t *testing.T) {
	const negTTL = 5 * time.Second
	isNotFound := func(err error) bool { return errors.Is(err, cache.ErrNotFound) }
	notFound := fmt.Errorf("configmap x: %w", cache.ErrNotFound)
	other := errors.New("connection refused")

	for _, tc := range []struct {
		name       string
		opts       []Option
		err        error
		wantCached bool
	}{
		{"negative error is cached", []Option{WithNegativeTTL(negTTL, isNotFound)}, notFound, true},
		{"other errors are not cached", []Option{WithNegativeTTL(negTTL, isNotFound)}, other, false},
		{"nothing is cached without WithNegativeTTL", nil, notFound, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			clock := testclock.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
			c := rcNew[string, int](t, append(tc.opts, WithClock(clock.Now))...)
			l := &rcLoader[int]{err: tc.err}
			if _, err := c.Get(ctx, "x", l.load); err != tc.err {
				t.Fatalf("first Get: err = %v, want %v", err, tc.err)
			}
			_, err := c.Get(ctx, "x", l.load)
			if err != tc.err {
				t.Fatalf("second Get: err = %v, want %v", err, tc.err)
			}
			wantCalls := int64(2)
			if tc.wantCached {
				wantCalls = 1
			}
			if n := l.calls.Load(); n != wantCalls {
				t.Fatalf("load called %d times, want %d", n, wantCalls)
			}
			if s := c.Stats(); s.NegativeHits != uint64(2-wantCalls) || s.LoadErrors != uint64(wantCalls) {
				t.Errorf("Stats = %+v", s)
			}
			if !tc.wantCached {
				return
			}

			// The negative TTL, not the TTL, applies; then the key loads
			// again, and a value replaces the error.
			clock.Advance(negTTL - time.Nanosecond)
			if _, err := c.Get(ctx, "x", l.load); err != tc.err || l.calls.Load() != 1 {
				t.Fatalf("before the negative TTL: err = %v, loads = %d", err, l.calls.Load())
			}
			clock.Advance(time.Nanosecond)
			ok := &rcLoader[int]{val: 7}
			if v, err := c.Get(ctx, "x", ok.load); err != nil || v != 7 || ok.calls.Load() != 1 {
				t.Fatalf("after the negative TTL: Get = %d, %v, loads = %d; want 7, nil, 1", v, err, ok.calls.Load())
			}
			if v, err := c.Get(ctx, "x", ok.load); err != nil || v != 7 || ok.calls.Load() != 1 {
				t.Fatalf("value not cached: Get = %d, %v, loads = %d", v, err, ok.calls.Load())
			}
		})
	}
}

func TestResourceCoalescesConcurrentMisses(t *testing.T) {
	const n = 64
	c := rcNew[string, int](t)
	release := make(chan struct{})
	var calls atomic.Int64
	load := func(context.Context) (int, error) {
		calls.Add(1)
		<-release
		return 42, nil
	}

	var wg sync.WaitGroup
	vals := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { vals[i], errs[i] = c.Get(t.Context(), "k", load) })
	}
	rcWaitFor(t, "all callers to wait for the one load", func() bool { return c.Stats().Coalesced == n-1 })
	close(release)
	wg.Wait()

	for i := range n {
		if vals[i] != 42 || errs[i] != nil {
			t.Fatalf("caller %d: Get = %d, %v; want 42", i, vals[i], errs[i])
		}
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("%d concurrent misses called load %d times, want 1", n, got)
	}
	if s := c.Stats(); s.Loads != 1 || s.Misses != n || s.Coalesced != n-1 {
		t.Errorf("Stats = %+v, want 1 load, %d misses, %d coalesced", s, n, n-1)
	}
	if !rcCached(t, c, "k") {
		t.Error("the shared result was not cached")
	}
}

// rcBlockingLoad returns a load function that reports its start on started
// and returns val when release is closed.
func rcBlockingLoad[V any](val V, started chan<- context.Context, release <-chan struct{}) func(context.Context) (V, error) {
	return func(ctx context.Context) (V, error) {
		started <- ctx
		<-release
		return val, nil
	}
}

type rcResult[V any] struct {
	val V
	err error
}

func rcGo[K comparable, V any](ctx context.Context, c *Cache[K, V], key K, load func(context.Context) (V, error)) <-chan rcResult[V] {
	ch := make(chan rcResult[V], 1)
	go func() {
		v, err := c.Get(ctx, key, load)
		ch <- rcResult[V]{v, err}
	}()
	return ch
}

func TestResourceInvalidate(t *testing.T) {
	ctx := t.Context()
	c := rcNew[string, string](t)
	l := &rcLoader[string]{val: "v"}
	c.Get(ctx, "k", l.load)
	c.Invalidate("k")
	c.Invalidate("never stored")
	if v, err := c.Get(ctx, "k", l.load); err != nil || v != "v" || l.calls.Load() != 2 {
		t.Fatalf("Get after Invalidate = %q, %v with %d loads; want a second load", v, err, l.calls.Load())
	}
	if s := c.Stats(); s.Invalidations != 2 {
		t.Errorf("Invalidations = %d, want 2", s.Invalidations)
	}
}

func TestResourceInvalidateDuringLoad(t *testing.T) {
	t.Run("the older load does not store its result", func(t *testing.T) {
		ctx := t.Context()
		c := rcNew[string, string](t)
		started, release := make(chan context.Context, 1), make(chan struct{})
		old := rcGo(ctx, c, "k", rcBlockingLoad("old", started, release))
		<-started
		c.Invalidate("k")
		close(release)
		if r := <-old; r.val != "old" || r.err != nil {
			t.Fatalf("the caller of the invalidated load got %q, %v; want its result", r.val, r.err)
		}
		if rcCached(t, c, "k") {
			t.Fatal("a load that started before Invalidate stored its result")
		}
	})

	t.Run("later Gets start a new load, which wins", func(t *testing.T) {
		ctx := t.Context()
		c := rcNew[string, string](t)
		started, release := make(chan context.Context, 1), make(chan struct{})
		old := rcGo(ctx, c, "k", rcBlockingLoad("old", started, release))
		<-started
		c.Invalidate("k")

		fresh := &rcLoader[string]{val: "new"}
		if v, err := c.Get(ctx, "k", fresh.load); err != nil || v != "new" {
			t.Fatalf("Get after Invalidate = %q, %v; want a new load, not the older one", v, err)
		}
		close(release)
		if r := <-old; r.val != "old" {
			t.Fatalf("older caller got %q", r.val)
		}
		if v, err := c.Get(ctx, "k", fresh.load); err != nil || v != "new" || fresh.calls.Load() != 1 {
			t.Fatalf("Get = %q, %v (%d new loads); want the newer value from the cache", v, err, fresh.calls.Load())
		}
	})
}

func TestResourceRefresh(t *testing.T) {
	t.Run("replaces the cached value", func(t *testing.T) {
		ctx := t.Context()
		c := rcNew[string, int](t)
		c.Get(ctx, "k", (&rcLoader[int]{val: 1}).load)
		l := &rcLoader[int]{val: 2}
		if v, err := c.Refresh(ctx, "k", l.load); err != nil || v != 2 {
			t.Fatalf("Refresh = %d, %v; want 2", v, err)
		}
		if v, _ := c.Get(ctx, "k", l.load); v != 2 || l.calls.Load() != 1 {
			t.Fatalf("Get after Refresh = %d with %d loads; want 2 from the cache", v, l.calls.Load())
		}
		if _, err := c.Refresh(ctx, "k", l.load); err != nil || l.calls.Load() != 2 {
			t.Fatalf("Refresh of a cached key: %v, %d loads; want a load every time", err, l.calls.Load())
		}
	})

	t.Run("a failed refresh keeps the cached value", func(t *testing.T) {
		ctx := t.Context()
		c := rcNew[string, int](t)
		c.Get(ctx, "k", (&rcLoader[int]{val: 1}).load)
		boom := errors.New("boom")
		if _, err := c.Refresh(ctx, "k", (&rcLoader[int]{err: boom}).load); err != boom {
			t.Fatalf("Refresh err = %v, want %v", err, boom)
		}
		if v, err := c.Get(ctx, "k", (&rcLoader[int]{val: 9}).load); v != 1 || err != nil {
			t.Fatalf("Get = %d, %v; want 1 from the cache", v, err)
		}
	})

	t.Run("supersedes a load in flight", func(t *testing.T) {
		ctx := t.Context()
		c := rcNew[string, string](t)
		started, release := make(chan context.Context, 1), make(chan struct{})
		old := rcGo(ctx, c, "k", rcBlockingLoad("old", started, release))
		<-started
		if v, err := c.Refresh(ctx, "k", (&rcLoader[string]{val: "new"}).load); v != "new" || err != nil {
			t.Fatalf("Refresh = %q, %v", v, err)
		}
		close(release)
		if r := <-old; r.val != "old" {
			t.Fatalf("caller of the superseded load got %q", r.val)
		}
		if v, _ := c.Get(ctx, "k", (&rcLoader[string]{val: "loaded"}).load); v != "new" {
			t.Fatalf("Get = %q; the superseded load overwrote Refresh's value", v)
		}
	})

	t.Run("Gets during a refresh wait for it", func(t *testing.T) {
		ctx := t.Context()
		c := rcNew[string, string](t)
		started, release := make(chan context.Context, 1), make(chan struct{})
		refreshed := make(chan string, 1)
		go func() {
			v, _ := c.Refresh(ctx, "k", rcBlockingLoad("refreshed", started, release))
			refreshed <- v
		}()
		<-started
		l := &rcLoader[string]{val: "loaded"}
		got := rcGo(ctx, c, "k", l.load)
		rcWaitFor(t, "Get to join the refresh", func() bool { return c.Stats().Coalesced == 1 })
		close(release)
		if r := <-got; r.val != "refreshed" || l.calls.Load() != 0 {
			t.Fatalf("Get during Refresh = %q with %d loads of its own", r.val, l.calls.Load())
		}
		<-refreshed
	})
}

func TestResourceCostBound(t *testing.T) {
	const (
		maxCost   = 16 << 10
		valueCost = 1 << 10
		keys      = 100
	)
	ctx := t.Context()
	c := rcNew[int, []byte](t,
		WithMaxCost(maxCost),
		WithCost(func(b []byte) int64 { return int64(len(b)) }))
	for k := range keys {
		if _, err := c.Get(ctx, k, func(context.Context) ([]byte, error) { return make([]byte, valueCost), nil }); err != nil {
			t.Fatal(err)
		}
	}
	// Get waits for ristretto to apply each store, so every admission and
	// eviction has happened by now.
	cached := 0
	for k := range keys {
		if rcCached(t, c, k) {
			cached++
		}
	}
	if cached == 0 || cached*valueCost > maxCost {
		t.Errorf("%d values of %d bytes cached under a bound of %d", cached, valueCost, maxCost)
	}
	if s := c.Stats(); s.Evictions < keys-maxCost/valueCost {
		t.Errorf("Evictions = %d, want at least %d", s.Evictions, keys-maxCost/valueCost)
	}

	// A value bigger than the whole bound is returned but never stored.
	big := &rcLoader[[]byte]{val: make([]byte, 2*maxCost)}
	for range 2 {
		if v, err := c.Get(ctx, -1, big.load); err != nil || len(v) != 2*maxCost {
			t.Fatalf("Get of an oversize value = %d bytes, %v", len(v), err)
		}
	}
	if n := big.calls.Load(); n != 2 {
		t.Errorf("oversize value loaded %d times, want 2 (never cached)", n)
	}
}

func TestResourceContextCancellation(t *testing.T) {
	type ctxKey struct{}

	t.Run("one waiter giving up does not cancel the load for the others", func(t *testing.T) {
		c := rcNew[string, string](t)
		started, release := make(chan context.Context, 1), make(chan struct{})
		ctxA, cancelA := context.WithCancel(context.WithValue(t.Context(), ctxKey{}, "A"))
		a := rcGo(ctxA, c, "k", rcBlockingLoad("v", started, release))
		loadCtx := <-started
		b := rcGo(t.Context(), c, "k", func(context.Context) (string, error) {
			t.Error("B started a second load")
			return "", nil
		})
		rcWaitFor(t, "B to join A's load", func() bool { return c.Stats().Coalesced == 1 })

		cancelA()
		if r := <-a; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("A after cancel: %q, %v; want context.Canceled", r.val, r.err)
		}
		if err := loadCtx.Err(); err != nil {
			t.Fatalf("the shared load's context ended with A's: %v", err)
		}
		if v := loadCtx.Value(ctxKey{}); v != "A" {
			t.Errorf("the load's context lost the starting caller's values: %v", v)
		}
		close(release)
		if r := <-b; r.val != "v" || r.err != nil {
			t.Fatalf("B = %q, %v; want v", r.val, r.err)
		}
		if !rcCached(t, c, "k") {
			t.Error("the result of the load was not cached")
		}
	})

	t.Run("the load is cancelled when every waiter has gone", func(t *testing.T) {
		c := rcNew[string, string](t)
		started := make(chan context.Context, 1)
		ctxA, cancelA := context.WithCancel(t.Context())
		a := rcGo(ctxA, c, "k", func(ctx context.Context) (string, error) {
			started <- ctx
			<-ctx.Done()
			return "late", nil // a result nobody waits for: not stored
		})
		loadCtx := <-started
		cancelA()
		if r := <-a; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Get after cancel: %v", r.err)
		}
		<-loadCtx.Done()
		if cause := context.Cause(loadCtx); cause != flight.ErrAbandoned {
			t.Errorf("cause = %v, want %v", cause, flight.ErrAbandoned)
		}
		l := &rcLoader[string]{val: "fresh"}
		if v, err := c.Get(t.Context(), "k", l.load); v != "fresh" || err != nil || l.calls.Load() != 1 {
			t.Fatalf("Get after the abandoned load = %q, %v with %d loads; want a new load", v, err, l.calls.Load())
		}
	})

	t.Run("a done context does not start a load", func(t *testing.T) {
		c := rcNew[string, string](t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		l := &rcLoader[string]{val: "v"}
		if _, err := c.Get(ctx, "k", l.load); !errors.Is(err, context.Canceled) || l.calls.Load() != 0 {
			t.Fatalf("Get with a done ctx: %v, %d loads", err, l.calls.Load())
		}
		c.Get(t.Context(), "k", l.load)
		if v, err := c.Get(ctx, "k", l.load); v != "v" || err != nil {
			t.Fatalf("a hit needs no live context: Get = %q, %v", v, err)
		}
	})
}

func TestResourceLoadPanics(t *testing.T) {
	ctx := t.Context()
	c := rcNew[string, string](t)
	boom := errors.New("boom")

	getRecover := func() (r any) {
		defer func() { r = recover() }()
		c.Get(ctx, "k", func(context.Context) (string, error) { panic(boom) })
		return nil
	}
	r := getRecover()
	err, ok := r.(error)
	if !ok {
		t.Fatalf("Get with a panicking load: recovered %#v, want an error", r)
	}
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "panicked: boom") {
		t.Errorf("panic value %q does not carry the load's panic", err)
	}
	if !strings.Contains(err.Error(), "resource_test.go") {
		t.Errorf("panic value does not carry the load's stack:\n%s", err)
	}

	l := &rcLoader[string]{val: "v"}
	if v, err := c.Get(ctx, "k", l.load); v != "v" || err != nil || l.calls.Load() != 1 {
		t.Fatalf("Get after a panicking load = %q, %v with %d loads; want a new load", v, err, l.calls.Load())
	}
	if s := c.Stats(); s.LoadErrors != 1 {
		t.Errorf("LoadErrors = %d, want 1", s.LoadErrors)
	}

	t.Run("Goexit", func(t *testing.T) {
		c := rcNew[string, string](t)
		if _, err := c.Get(ctx, "k", func(context.Context) (string, error) { runtime.Goexit(); return "", nil }); err != flight.ErrGoexit {
			t.Fatalf("Get with a load that calls Goexit: %v", err)
		}
		if v, err := c.Get(ctx, "k", l.load); v != "v" || err != nil {
			t.Fatalf("Get after Goexit = %q, %v", v, err)
		}
	})
}

func TestResourceStats(t *testing.T) {
	ctx := t.Context()
	clock := testclock.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	c := rcNew[string, int](t, WithClock(clock.Now),
		WithNegativeTTL(time.Second, func(err error) bool { return errors.Is(err, cache.ErrNotFound) }))
	found := &rcLoader[int]{val: 1}
	missing := &rcLoader[int]{err: cache.ErrNotFound}
	failing := &rcLoader[int]{err: errors.New("timeout")}

	c.Get(ctx, "a", found.load)    // miss, load
	c.Get(ctx, "a", found.load)    // hit
	c.Get(ctx, "nf", missing.load) // miss, load error (negative)
	c.Get(ctx, "nf", missing.load) // negative hit
	c.Get(ctx, "e", failing.load)  // miss, load error
	c.Invalidate("a")
	c.Get(ctx, "a", found.load) // miss, load
	c.Refresh(ctx, "a", found.load)

	want := cache.ResourceStats{Hits: 1, NegativeHits: 1, Misses: 4, Loads: 5, LoadErrors: 2, Invalidations: 1}
	if got := c.Stats(); got != want {
		t.Errorf("Stats =\n %+v, want\n %+v", got, want)
	}
	if got, want := c.Stats().HitRatio(), 2.0/6; got != want {
		t.Errorf("HitRatio = %v, want %v", got, want)
	}
	if r := (cache.ResourceStats{}).HitRatio(); r != 0 {
		t.Errorf("HitRatio of nothing = %v", r)
	}
}

func TestResourceAnyComparableKey(t *testing.T) {
	type objectKey struct{ Namespace, Name string }
	ctx := t.Context()
	c := rcNew[objectKey, string](t)
	keys := []objectKey{{"default", "a"}, {"default", "b"}, {"kube-system", "a"}}
	for _, k := range keys {
		v, err := c.Get(ctx, k, func(context.Context) (string, error) { return k.Namespace + "/" + k.Name, nil })
		if err != nil || v != k.Namespace+"/"+k.Name {
			t.Fatalf("Get(%v) = %q, %v", k, v, err)
		}
	}
	for _, k := range keys {
		if !rcCached(t, c, k) {
			t.Errorf("%v not cached", k)
		}
	}
}

func TestResourceHashCollision(t *testing.T) {
	ctx := t.Context()
	c := rcNew[string, string](t, WithHash(func(string) uint64 { return 1 })) // every key in one slot
	a := &rcLoader[string]{val: "A"}
	b := &rcLoader[string]{val: "B"}
	for i, step := range []struct {
		key    string
		l      *rcLoader[string]
		want   string
		aLoads int64
		bLoads int64
	}{
		{"a", a, "A", 1, 0},
		{"b", b, "B", 1, 1}, // must not be served a's entry
		{"b", b, "B", 1, 1}, // b holds the slot now
		{"a", a, "A", 2, 1}, // a lost it: reload
	} {
		v, err := c.Get(ctx, step.key, step.l.load)
		if err != nil || v != step.want || a.calls.Load() != step.aLoads || b.calls.Load() != step.bLoads {
			t.Fatalf("step %d: Get(%q) = %q, %v; loads a=%d b=%d", i, step.key, v, err, a.calls.Load(), b.calls.Load())
		}
	}
}

func TestResourceHitDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	c := rcNew[string, int](t)
	l := &rcLoader[int]{val: 1}
	c.Get(ctx, "key", l.load)
	if !rcCached(t, c, "key") {
		t.Skip("ristretto did not keep the value")
	}
	// ristretto allocates a fresh 64-slot buffer of access counts every 64
	// Gets or so; AllocsPerRun rounds that down to 0. The method value is
	// made once: load escapes (it runs on a goroutine of its own on a
	// miss), so a func value built per call is allocated by the caller.
	load := l.load
	if n := testing.AllocsPerRun(1000, func() { c.Get(ctx, "key", load) }); n != 0 {
		t.Errorf("a hit allocates %v times", n)
	}
}

func TestResourcePurgeAndClose(t *testing.T) {
	ctx := t.Context()
	c, err := New[string, int]()
	if err != nil {
		t.Fatal(err)
	}
	l := &rcLoader[int]{val: 1}
	c.Get(ctx, "a", l.load)
	c.Get(ctx, "b", l.load)

	started, release := make(chan context.Context, 1), make(chan struct{})
	inflight := rcGo(ctx, c, "c", rcBlockingLoad(3, started, release))
	<-started
	c.Purge()
	close(release)
	if r := <-inflight; r.val != 3 {
		t.Fatalf("caller of a load in flight during Purge got %d, %v", r.val, r.err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if rcCached(t, c, k) {
			t.Errorf("%s cached after Purge", k)
		}
	}
	if s := c.Stats(); s.Evictions != 0 {
		t.Errorf("Purge counted %d evictions", s.Evictions)
	}

	c.Get(ctx, "a", l.load)
	c.Close()
	c.Close()
	before := l.calls.Load()
	for range 2 {
		if v, err := c.Get(ctx, "a", l.load); v != 1 || err != nil {
			t.Fatalf("Get after Close = %d, %v", v, err)
		}
	}
	if n := l.calls.Load() - before; n != 2 {
		t.Errorf("after Close, two Gets called load %d times, want 2", n)
	}
	c.Invalidate("a")
	c.Purge()
	if _, err := c.Refresh(ctx, "a", l.load); err != nil {
		t.Fatal(err)
	}
}

func TestResourceOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  Option
		want string // in the error; "" for none
	}{
		{"TTL", WithTTL(time.Hour), ""},
		{"zero TTL", WithTTL(0), "TTL must be positive"},
		{"negative TTL", WithTTL(-time.Second), "TTL must be positive"},
		{"max cost", WithMaxCost(1 << 20), ""},
		{"zero max cost", WithMaxCost(0), "bound must be positive"},
		{"cost", WithCost(func(s string) int64 { return int64(len(s)) }), ""},
		{"cost of another type", WithCost(func(b []byte) int64 { return int64(len(b)) }), "func([]uint8) int64, but the cache holds string values"},
		{"nil cost", WithCost[string](nil), "WithCost(nil)"},
		{"negative TTL", WithNegativeTTL(time.Second, func(error) bool { return true }), ""},
		{"zero negative TTL", WithNegativeTTL(0, func(error) bool { return true }), "TTL must be positive"},
		{"nil isNegative", WithNegativeTTL(time.Second, nil), "isNegative is nil"},
		{"nil clock", WithClock(nil), "WithClock(nil)"},
		{"hash", WithHash(func(k int) uint64 { return uint64(k) }), ""},
		{"hash of another type", WithHash(func(k string) uint64 { return 0 }), "func(string) uint64, but the cache's keys are int"},
		{"nil hash", WithHash[int](nil), "WithHash(nil)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New[int, string](tc.opt)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestResourceConcurrentUse mixes every operation on a few keys, for the
// race detector and for one invariant: once Invalidate or Purge has
// returned, no Get serves a value whose load started before it.
func TestResourceConcurrentUse(t *testing.T) {
	const (
		workers = 8
		rounds  = 300
	)
	keys := []string{"a", "b", "c"}
	c := rcNew[string, int64](t, WithNegativeTTL(time.Hour, func(err error) bool { return errors.Is(err, cache.ErrNotFound) }))
	var versions [3]atomic.Int64 // per key, taken by each load when it starts
	load := func(k int) func(context.Context) (int64, error) {
		return func(context.Context) (int64, error) {
			v := versions[k].Add(1)
			if v%7 == 0 {
				return 0, cache.ErrNotFound
			}
			runtime.Gosched()
			return v, nil
		}
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := t.Context()
			for r := range rounds {
				k := (w + r) % len(keys)
				switch (w*rounds + r) % 10 {
				case 0, 1:
					before := versions[k].Load()
					if w%2 == 0 {
						c.Invalidate(keys[k])
					} else if r%5 == 0 {
						c.Purge()
					} else {
						continue
					}
					if v, err := c.Get(ctx, keys[k], load(k)); err == nil && v <= before {
						t.Errorf("key %s: Get after invalidation = %d, loaded before it (version was %d)", keys[k], v, before)
						return
					}
				case 2:
					c.Refresh(ctx, keys[k], load(k))
				case 3:
					short, cancel := context.WithCancel(ctx)
					if r%2 == 0 {
						cancel()
					}
					c.Get(short, keys[k], load(k))
					cancel()
				default:
					c.Get(ctx, keys[k], load(k))
				}
			}
		})
	}
	wg.Wait()
	s := c.Stats()
	if s.Loads == 0 || s.Hits == 0 || s.Invalidations == 0 {
		t.Errorf("Stats = %+v", s)
	}
}
