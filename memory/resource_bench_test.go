package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/buildcache/buildcache/memory"
)

// The hit benchmarks read the same warm set of string keys from the Cache
// and, for reference, from a sync.Map and from a bare ristretto cache.

const rcBenchKeys = 1 << 10 // a power of two

func rcBenchKeyList() []string {
	keys := make([]string, rcBenchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("default/configmap-%04d", i)
	}
	return keys
}

var errRCBenchMiss = errors.New("benchmark: unexpected miss")

// rcBenchMiss is the load of every timed Get: it captures nothing, so the
// call allocates nothing, and a miss shows up as an error.
func rcBenchMiss(context.Context) (int, error) { return 0, errRCBenchMiss }

func rcBenchWarmCache(b *testing.B) (*memory.Cache[string, int], []string) {
	b.Helper()
	ctx := context.Background()
	c, err := memory.New[string, int]()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	keys := rcBenchKeyList()
	for i, k := range keys {
		if _, err := c.Get(ctx, k, func(context.Context) (int, error) { return i, nil }); err != nil {
			b.Fatal(err)
		}
	}
	for _, k := range keys {
		if _, err := c.Get(ctx, k, rcBenchMiss); err != nil {
			b.Fatalf("%s not cached after warm-up: %v", k, err)
		}
	}
	return c, keys
}

// rcRunParallel runs get over keys from RunParallel's goroutines, each
// starting at a different key.
func rcRunParallel(b *testing.B, keys []string, get func(key string) bool) {
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(rcBenchKeys / 8)
		for pb.Next() {
			if !get(keys[i&(rcBenchKeys-1)]) {
				b.Errorf("miss on %s", keys[i&(rcBenchKeys-1)])
				return
			}
			i++
		}
	})
}

func BenchmarkResourceCacheHitParallel(b *testing.B) {
	ctx := context.Background()
	c, keys := rcBenchWarmCache(b)
	rcRunParallel(b, keys, func(key string) bool {
		_, err := c.Get(ctx, key, rcBenchMiss)
		return err == nil
	})
}

// BenchmarkResourceCacheHitParallelClosure passes a load that captures the
// key, as callers often do: the closure escapes (see Cache.Get), so the
// caller allocates it on every call, hit or not.
func BenchmarkResourceCacheHitParallelClosure(b *testing.B) {
	ctx := context.Background()
	c, keys := rcBenchWarmCache(b)
	rcRunParallel(b, keys, func(key string) bool {
		_, err := c.Get(ctx, key, func(context.Context) (int, error) {
			return 0, fmt.Errorf("%s: %w", key, errRCBenchMiss)
		})
		return err == nil
	})
}

// BenchmarkResourceRefSyncMapLoadParallel is the floor: a sync.Map Load.
func BenchmarkResourceRefSyncMapLoadParallel(b *testing.B) {
	var m sync.Map
	keys := rcBenchKeyList()
	for i, k := range keys {
		m.Store(k, i)
	}
	rcRunParallel(b, keys, func(key string) bool {
		_, ok := m.Load(key)
		return ok
	})
}

// BenchmarkResourceRefRistrettoGetParallel is what the Cache is built on:
// a ristretto Get with ristretto's own string hashing, of entries without
// a TTL.
func BenchmarkResourceRefRistrettoGetParallel(b *testing.B) {
	rcBenchRistretto(b, 0)
}

// BenchmarkResourceRefRistrettoGetTTLParallel is the same with entries that
// have a TTL, as the Cache's have: ristretto then reads the clock on every
// Get.
func BenchmarkResourceRefRistrettoGetTTLParallel(b *testing.B) {
	rcBenchRistretto(b, time.Hour)
}

func rcBenchRistretto(b *testing.B, ttl time.Duration) {
	rc, err := ristretto.NewCache(&ristretto.Config[string, int]{
		NumCounters: 1 << 16,
		MaxCost:     64 << 20,
		BufferItems: 64,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rc.Close)
	keys := rcBenchKeyList()
	for i, k := range keys {
		rc.SetWithTTL(k, i, 1, ttl)
	}
	rc.Wait()
	for _, k := range keys {
		if _, ok := rc.Get(k); !ok {
			b.Fatalf("%s not admitted", k)
		}
	}
	rcRunParallel(b, keys, func(key string) bool {
		_, ok := rc.Get(key)
		return ok
	})
}

// BenchmarkResourceCacheMiss is a miss of a new key each time: a load on a
// goroutine of its own, and a store that waits for ristretto to apply it.
func BenchmarkResourceCacheMiss(b *testing.B) {
	ctx := context.Background()
	c, err := memory.New[int, int]()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	load := func(context.Context) (int, error) { return 1, nil }
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := c.Get(ctx, i, load); err != nil {
			b.Fatal(err)
		}
	}
}
