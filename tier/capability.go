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
//   - cache.Leaser: the leases of both tiers. A pull through the tier
//     under a lease passes the leased context to the near tier's Stat,
//     Get and Put, so its collectors (eviction, gc, another process's)
//     keep the pull's blobs until it records its root, and to the far
//     tier's, so the bucket's collectors (buildcache gc on it, in any
//     process) keep what it wrote or looked at there. A tier without
//     leases makes its part a no-op; with none, Lease returns ctx
//     unchanged, as a resolver does for such a store.
//   - cache.RootIndex, RootLookup, RootRecorder: the near tier's roots
//     (index.go), composed with the far tier's records when it keeps
//     some (fleet.go).
//   - cache.RevalidationClaimer: the far tier's claims (fleet.go).
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

// Lease implements cache.Leaser with a lease of each tier that has
// leases (none: ctx unchanged). release ends the far lease, then the
// near one.
func (c *Cache) Lease(ctx context.Context) (context.Context, func() error, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	endNear, endFar := func() error { return nil }, func() error { return nil }
	if l, ok := cache.As[cache.Leaser](c.near); ok {
		leased, end, err := l.Lease(ctx)
		if err != nil {
			return nil, nil, err
		}
		ctx, endNear = leased, end
	}
	if l, ok := cache.As[cache.Leaser](c.far); ok {
		leased, end, err := l.Lease(ctx)
		if err != nil {
			endNear()
			return nil, nil, err
		}
		ctx, endFar = leased, end
	}
	return ctx, func() error { return errors.Join(endFar(), endNear()) }, nil
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
