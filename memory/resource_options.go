package memory

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of New, each changed by the option named.
const (
	defaultTTL     = 30 * time.Second // WithTTL
	defaultMaxCost = 64 << 20         // WithMaxCost: 64 MiB
)

// Option configures New.
type Option func(*options) error

type options struct {
	ttl        time.Duration
	maxCost    int64
	cost       any // func(V) int64, checked by New
	hash       any // func(K) uint64, checked by New
	negTTL     time.Duration
	isNegative func(error) bool
	now        func() time.Time
}

// WithTTL sets how long a loaded value is served before the next Get loads
// it again. The TTL counts from the moment the load started. It must be
// positive; the default is 30s.
func WithTTL(d time.Duration) Option {
	return func(o *options) error {
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
//
// The bound costs nothing up front. Each entry's cost includes its fixed
// size (the entry, its index slots and, with the real clock, its timer:
// about 250 bytes beyond the key and value). Once the entries' cost
// reaches 1 MiB (or an eighth of the bound, if less), the cache makes a
// ristretto cache to choose what to admit and evict: about 300 KiB of
// heap, most of it ristretto's fixed write buffer, and 4 to 5 bytes per
// admission counter. It gets ten counters per entry for four times the
// entries it holds, and four times more when the entries reach a tenth
// of them, up to ten per KiB of the bound: 655,360 counters at the
// default bound, about 3.4 MiB in all, reached once the cache holds
// 16,400 entries. Purge drops it.
func WithMaxCost(bytes int64) Option {
	return func(o *options) error {
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
	return func(o *options) error {
		if cost == nil {
			return errors.New("memory: WithCost(nil)")
		}
		o.cost = cost
		return nil
	}
}

// WithHash sets the function that hashes keys, in place of
// hash/maphash.Comparable under a seed of the cache's own. A hit hashes
// its key once; for a key of several strings maphash.Comparable makes a
// call per field, which can be half the cost of a hit, and a hash written
// for the key's shape can be a fraction of that. The hash must spread
// keys evenly, and, if keys come from someone who could choose them to
// collide, be seeded with a secret, random value: keys with one hash take
// turns in the cache (never serving each other's values: a hit compares
// the key). K must be the key type of the cache New makes, or New fails.
func WithHash[K comparable](hash func(K) uint64) Option {
	return func(o *options) error {
		if hash == nil {
			return errors.New("memory: WithHash(nil)")
		}
		o.hash = hash
		return nil
	}
}

// WithNegativeTTL caches errors for which isNegative reports true (for
// example errors.Is(err, cache.ErrNotFound)) for d, usually shorter than
// the TTL: until then Get returns the same error without calling load.
// Other errors are never cached. By default no error is cached.
func WithNegativeTTL(d time.Duration, isNegative func(error) bool) Option {
	return func(o *options) error {
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
	return func(o *options) error {
		if now == nil {
			return errors.New("memory: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}
