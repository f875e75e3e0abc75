package s3

import (
	"context"
	"time"
)

// SetListPageSize makes Walk list n keys a page, so that a test sees
// pagination without storing a thousand objects.
func SetListPageSize(c *Cache, n int32) { c.listPageSize = n }

// SetServerClock makes c judge ages of objects (leases, markers, blobs'
// LastModified) by now instead of the endpoint's Date header.
func SetServerClock(c *Cache, now func() time.Time) { c.serverClock = now }

// SetSleep replaces c's waits (a holder waiting out a collector, a
// process waiting for another's pull).
func SetSleep(c *Cache, sleep func(ctx context.Context, d time.Duration) error) { c.sleepHook = sleep }

// AbandonLeases stops renewing ctx's leases and leaves their objects, as
// a process that dies does.
func AbandonLeases(ctx context.Context) {
	for _, l := range leasesOf(ctx) {
		l.abandon()
	}
}

// GCMaxHeld bounds the candidates a GC holds at once (default 100,000).
func GCMaxHeld(n int) GCOption { return func(o *gcOptions) { o.maxHeld = n } }

// SweepWaits is how many lease writes waited for a collector.
func SweepWaits(c *Cache) uint64 { return c.sweepWaits.Load() }

// BeginSweep announces a collector on c, as GC does, and returns the
// function that ends it; ok is false when another went first.
func BeginSweep(ctx context.Context, c *Cache, window time.Duration) (end func(), ok bool, err error) {
	s, err := c.beginSweep(ctx, window)
	if err != nil || s == nil {
		return nil, false, err
	}
	return s.end, true, nil
}

// Holder is the name c's claims carry.
func Holder(c *Cache) string { return c.holder }
