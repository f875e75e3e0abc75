package s3

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// A lease is an object, buildcache/leases/<id>, that names every blob
// its holder wrote or looked at under it (a pull between its first blob
// and the record of its root), and that its holder rewrites every
// quarter of the lease's TTL for as long as it lasts. A collector keeps
// the blobs that a lease names unless the lease object was last written
// more than its TTL ago by the endpoint's clock: its holder stopped (it
// released the lease, which deletes the object, or it died, and the
// collector deletes the object). A holder names a blob, and the name is
// in the bucket, before it asks about the blob; sweep.go says why a
// collector then either sees the name or the holder sees the blob gone.
//
// The object is written on the first blob named, not before: a lease
// under which nothing reaches the bucket (a pull that the near tier
// served) costs no request. Blobs named at once by concurrent calls
// share one write.

// DefaultLeaseTTL is how long a lease of a holder that stopped renewing
// it keeps its blobs: WithLeaseTTL's default.
const DefaultLeaseTTL = 10 * time.Minute

type leaseKey struct{}

type leaseDoc struct {
	Holder  string        `json:"holder"`
	TTL     time.Duration `json:"ttl"`     // nanoseconds
	Written time.Time     `json:"written"` // by the holder's clock: every write differs, and so does its ETag
	Blobs   []string      `json:"blobs"`
}

type lease struct {
	c      *Cache
	key    string
	holder string

	mu      sync.Mutex
	named   map[string]bool // in the object
	pending map[string]bool // asked for, not yet written
	writing chan struct{}   // closed when the write in flight ends; nil: none
	lastErr error
	written time.Time // when the object was last written (local clock); zero: never
	ended   bool
	stop    chan struct{} // ends the renewals
}

var _ cache.Leaser = (*Cache)(nil)

// Lease implements cache.Leaser with an object in the bucket (see the
// package doc, # Fleet): every blob asked about with the returned
// context (Stat, Get, Put) is named in it first, and every collector
// of the bucket (GC, in any process) keeps what live leases name. The
// lease lasts until release, or until its holder has not renewed it
// for WithLeaseTTL (its process died). Lease itself makes no request.
func (c *Cache) Lease(ctx context.Context) (context.Context, func() error, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("s3: lease: %w", err)
	}
	id := newID()
	l := &lease{
		c: c, key: c.fleetKey(leasesDir, id), holder: id,
		named: map[string]bool{}, pending: map[string]bool{},
		stop: make(chan struct{}),
	}
	leases := leasesOf(ctx)
	leases = append(slices.Clone(leases), l)
	return context.WithValue(ctx, leaseKey{}, leases), l.release, nil
}

// leasesOf returns the s3 leases ctx carries (of any Cache: a context
// may hold the leases of a tier's far tier and of another bucket).
func leasesOf(ctx context.Context) []*lease {
	l, _ := ctx.Value(leaseKey{}).([]*lease)
	return l
}

// leaseOf returns ctx's lease of this Cache, or nil.
func (c *Cache) leaseOf(ctx context.Context) *lease {
	for _, l := range leasesOf(ctx) {
		if l.c == c {
			return l
		}
	}
	return nil
}

// underLease names d in ctx's lease of this Cache, if any, before the
// caller asks about d.
func (c *Cache) underLease(ctx context.Context, ds ...v1.Hash) error {
	l := c.leaseOf(ctx)
	if l == nil {
		return nil
	}
	hexes := make([]string, len(ds))
	for i, d := range ds {
		hexes[i] = d.Hex
	}
	return l.name(ctx, hexes...)
}

// name writes hexes into the lease object, with whatever else is
// pending, and returns once they are in it. Concurrent callers share a
// write: one writes, the others wait for it and find their names done.
func (l *lease) name(ctx context.Context, hexes ...string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.ended {
			return nil // it protects nothing more: not the caller's failure
		}
		missing := false
		for _, h := range hexes {
			if !l.named[h] {
				missing = true
				l.pending[h] = true
			}
		}
		if !missing {
			return nil
		}
		if ch := l.writing; ch != nil {
			l.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				l.mu.Lock()
				return fmt.Errorf("s3: lease: %w", ctx.Err())
			}
			l.mu.Lock()
			continue
		}
		if err := l.writeLocked(ctx); err != nil {
			return err
		}
	}
}

// writeLocked writes the object with every name named or pending; l.mu
// is held, and released during the requests. A write of new names then
// waits out any collector sweeping (sweep.go), so that what the caller
// looks at next is either kept by every collector or seen gone; a
// renewal (names unchanged) does not.
func (l *lease) writeLocked(ctx context.Context) error {
	names := make([]string, 0, len(l.named)+len(l.pending))
	for h := range l.named {
		names = append(names, h)
	}
	fresh := false
	for h := range l.pending {
		if !l.named[h] {
			names = append(names, h)
			fresh = true
		}
	}
	slices.Sort(names)
	first := l.written.IsZero()
	ch := make(chan struct{})
	l.writing = ch
	l.mu.Unlock()
	at := l.c.opts.now()
	_, err := l.c.putJSON(ctx, l.key, leaseDoc{Holder: l.holder, TTL: l.c.opts.leaseTTL, Written: at, Blobs: names}, "", false)
	if err == nil && fresh {
		err = l.c.waitSweepers(ctx)
	} else if err != nil {
		err = l.c.remoteErr("lease", l.key, err)
	}
	l.mu.Lock()
	l.writing = nil
	close(ch)
	if err != nil {
		l.lastErr = err
		return err
	}
	for _, h := range names {
		l.named[h] = true
		delete(l.pending, h)
	}
	l.written = at
	if first && !l.ended {
		go l.renew()
	}
	return nil
}

// renew rewrites the object every quarter of the TTL until the lease
// ends, so that collectors see its holder alive.
func (l *lease) renew() {
	every := l.c.opts.leaseTTL / 4
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		if !l.ended && l.writing == nil {
			ctx, cancel := context.WithTimeout(context.Background(), every)
			_ = l.writeLocked(ctx) // a failure is retried next tick; collectors see the last write meanwhile
			cancel()
		}
		l.mu.Unlock()
	}
}

// fresh makes sure the object was written less than half a TTL ago
// (rewriting it otherwise), so that it outlives what the caller does
// next: a record write that must happen while the lease holds.
func (l *lease) fresh(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended || l.written.IsZero() || l.c.opts.now().Sub(l.written) < l.c.opts.leaseTTL/2 {
		return nil
	}
	for l.writing != nil {
		ch := l.writing
		l.mu.Unlock()
		<-ch
		l.mu.Lock()
	}
	return l.writeLocked(ctx)
}

// release ends the lease: no more renewals, and the object goes.
func (l *lease) release() error {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return nil
	}
	l.ended = true
	close(l.stop)
	for l.writing != nil {
		ch := l.writing
		l.mu.Unlock()
		<-ch
		l.mu.Lock()
	}
	written := !l.written.IsZero()
	l.mu.Unlock()
	if !written {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := l.c.deleteKey(ctx, l.key, ""); err != nil {
		return l.c.remoteErr("releasing lease", l.key, err) // it expires on its own
	}
	return nil
}

// abandon stops the renewals and leaves the object, as a process that
// dies does (tests).
func (l *lease) abandon() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ended {
		l.ended = true
		close(l.stop)
	}
}
