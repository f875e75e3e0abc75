package localfs

import (
	"errors"
	"fmt"
	"time"
)

type options struct {
	maxBytes      int64
	minFreeBytes  int64
	ttl           time.Duration
	tempGrace     time.Duration
	touchInterval time.Duration
	lowWater      float64
	now           func() time.Time

	verifiedEntries int
	verifiedTTL     time.Duration
}

// defaultOptions are a Store's settings before its options apply; each
// With option states its default.
func defaultOptions() options {
	return options{tempGrace: time.Minute, touchInterval: time.Second, lowWater: defaultLowWater, now: time.Now,
		verifiedEntries: defaultVerifiedEntries, verifiedTTL: defaultVerifiedTTL}
}

// Option configures a Store.
type Option func(*options) error

// WithMaxBytes bounds the bytes of blobs the store keeps. A Put that would
// exceed it first evicts the least recently used blobs that no index.json
// root reaches, down to the low-water mark (WithLowWater); if that is not
// enough it fails with ErrNoSpace. The budget holds across every process
// using the directory: they count the bytes of blobs, and the bytes that
// writes in progress reserved, in one record (.buildcache/usage, under its
// own lock), and a write reserves its bytes there before it starts. Blobs
// that other tools put into blobs/sha256 (BuildKit's cache export, cp)
// are counted when the record is next recounted from the directory: at
// every eviction and GC, and by a budgeted Put when the last count is a
// minute old. Default 0: no budget (free disk space still applies).
func WithMaxBytes(n int64) Option {
	return func(o *options) error {
		if err := nonNegative("WithMaxBytes", n); err != nil {
			return err
		}
		o.maxBytes = n
		return nil
	}
}

// defaultLowWater is WithLowWater's default.
const defaultLowWater = 0.9

// WithLowWater sets how far below the byte budget an eviction goes, as a
// fraction of WithMaxBytes: a Put that would pass the budget evicts the
// least recently used unreachable blobs until the blobs and the writes in
// progress fit in fraction*budget bytes (or, if that many cannot be
// evicted, at least until the Put fits the budget). Every eviction scans
// blobs/, so evicting a tenth of the budget at a time pays that scan once
// per tenth of the budget written instead of once per Put. 1 evicts only
// what each Put needs. The fraction must be in (0, 1]. Default 0.9.
func WithLowWater(fraction float64) Option {
	return func(o *options) error {
		if !(fraction > 0 && fraction <= 1) { // NaN fails too
			return fmt.Errorf("localfs: WithLowWater(%v): must be above 0 and at most 1", fraction)
		}
		o.lowWater = fraction
		return nil
	}
}

// WithMinFreeBytes keeps at least n bytes free on the file system: a Put
// that would leave less evicts first, then fails with ErrNoSpace without
// writing. While a Put streams, free space is checked again every 4 MiB,
// so a stream longer than announced (or of unknown size) fails with
// ErrNoSpace, leaving nothing behind, once the floor is reached. Default
// 0: a Put needs only room for its own bytes.
func WithMinFreeBytes(n int64) Option {
	return func(o *options) error {
		if err := nonNegative("WithMinFreeBytes", n); err != nil {
			return err
		}
		o.minFreeBytes = n
		return nil
	}
}

// WithTTL makes GC remove blobs that no root reaches and that nobody has
// read or written for longer than d. Default 0: no expiry.
func WithTTL(d time.Duration) Option {
	return func(o *options) error {
		if err := nonNegative("WithTTL", d); err != nil {
			return err
		}
		o.ttl = d
		return nil
	}
}

// WithTempGrace sets how old an abandoned temp file must be before Open or
// GC removes it. Temp files still locked by a live writer are never
// removed. Default 1 minute, which covers the instant between a writer
// creating its temp file and locking it.
func WithTempGrace(d time.Duration) Option {
	return func(o *options) error {
		if err := nonNegative("WithTempGrace", d); err != nil {
			return err
		}
		o.tempGrace = d
		return nil
	}
}

// Defaults of WithVerifiedRecord.
const (
	defaultVerifiedEntries = 4096
	defaultVerifiedTTL     = time.Minute
)

// WithVerifiedRecord bounds the store's record of blobs verified
// recently, which lets OpenFile send a blob hashed less than ttl ago
// with no hash, if its file has not changed since (the package doc,
// "Verification"): at most entries blobs, the most recently verified.
// entries 0 turns the record off: every send hashes its blob. Default
// 4096 entries, 1 minute.
func WithVerifiedRecord(entries int, ttl time.Duration) Option {
	return func(o *options) error {
		if entries < 0 {
			return fmt.Errorf("localfs: WithVerifiedRecord(%d, %v): negative entries", entries, ttl)
		}
		if err := nonNegative("WithVerifiedRecord", ttl); err != nil {
			return err
		}
		o.verifiedEntries, o.verifiedTTL = entries, ttl
		return nil
	}
}

// WithClock replaces time.Now, for tests of TTL and LRU order.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("localfs: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}

// nonNegative rejects a negative size or duration given to the option
// named name.
func nonNegative[T int64 | time.Duration](name string, v T) error {
	if v < 0 {
		return fmt.Errorf("localfs: %s(%v): must not be negative", name, v)
	}
	return nil
}
