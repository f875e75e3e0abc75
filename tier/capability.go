package tier

import (
	"context"
	"errors"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// What a tier.Cache does with the capabilities of its tiers (cache.As
// finds them):
//
//   - cache.Leaser: the near tier's leases. A pull through the tier under
//     a lease passes the leased context to the near tier's Stat, Get and
//     Put, so its collectors (eviction, gc, another process's) keep the
//     pull's blobs until it records its root. The far tier is shared and
//     is not collected by this process; a near tier without leases makes
//     Lease return ctx unchanged, as a resolver does for such a store.
//   - cache.RootIndex, RootLookup, RootRecorder: the near tier's roots
//     (index.go).
//   - cache.DeferredSyncer: PutDeferred is the near tier's (or its Put)
//     followed by the far write every Put makes; SyncBlobs syncs the near
//     tier. The far tier's writes are complete-or-nothing on their own.
//   - cache.Ingester: the near tier's ingestion, whose Commit also makes
//     the far write a Put makes (ingest.go).
//   - cache.FileOpener: the near tier's files (blobfile.go); a blob only
//     the far tier holds is ErrNotFound there, for Get to serve and fill.
//   - io.Closer: Close waits for the background far writes and closes both
//     tiers.
//   - cache.WriteProber: the near tier's, through Unwrap. A far tier that
//     is down does not make the tier unwritable (its Puts go to the near
//     tier, and the far outage is bounded and counted), so a probe does
//     not ask it.
//   - Everything else that is the machine's own (lifetime counters, a
//     directory, gc, verify): through Unwrap, which returns the near tier.
//   - cache.StatsReporter: the tier's own counters (Stats, StatsByTier).

var (
	_ cache.LayerCacheCloser = (*Cache)(nil)
	_ cache.Unwrapper        = (*Cache)(nil)
	_ cache.Tiered           = (*Cache)(nil)
	_ cache.Leaser           = (*Cache)(nil)
	_ cache.RootLookup       = (*Cache)(nil)
	_ cache.RootRecorder     = (*Cache)(nil)
	_ cache.DeferredSyncer   = (*Cache)(nil)
)

// Unwrap implements cache.Unwrapper: the near tier, where cache.As finds
// what the tier does not forward itself.
func (c *Cache) Unwrap() cache.LayerCache { return c.near }

// Lease implements cache.Leaser with the near tier's leases, or returns
// ctx unchanged when the near tier has none.
func (c *Cache) Lease(ctx context.Context) (context.Context, func() error, error) {
	if l, ok := cache.As[cache.Leaser](c.near); ok {
		return l.Lease(ctx)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return ctx, func() error { return nil }, nil
}

// PutDeferred implements cache.DeferredSyncer: the near tier's
// PutDeferred (or Put), then the far tier as Put writes it.
func (c *Cache) PutDeferred(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	if ds, ok := cache.As[cache.DeferredSyncer](c.near); ok {
		return c.put(ctx, d, size, r, ds.PutDeferred)
	}
	return c.put(ctx, d, size, r, c.near.Put)
}

// SyncBlobs implements cache.DeferredSyncer on the near tier.
func (c *Cache) SyncBlobs(ctx context.Context) error {
	if ds, ok := cache.As[cache.DeferredSyncer](c.near); ok {
		return ds.SyncBlobs(ctx)
	}
	return nil
}

// Close ends a probe of a far tier that is down, waits for the background
// far writes (Flush), then closes the near
// and the far tier, each if it is an io.Closer. The Cache must not be used
// afterwards.
func (c *Cache) Close() error {
	c.stopBg() // a probe in progress gives up
	c.Flush()
	var errs []error
	for _, t := range []cache.LayerCache{c.near, c.far} {
		if cl, ok := t.(io.Closer); ok {
			errs = append(errs, cl.Close())
		}
	}
	return errors.Join(errs...)
}
