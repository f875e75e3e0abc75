// Package testclock provides a manual clock for tests: time moves only
// when the test says so, so tests of TTLs, LRU order and backoff need no
// sleeps. It is safe for concurrent use.
package testclock

import (
	"sync"
	"time"
)

// Clock is a clock that moves only when told. Pass its Now method where
// code takes a func() time.Time (localfs.WithClock, for example).
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock that reads start until it is moved.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (backward if d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
