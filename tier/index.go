package tier

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/rootindex"
)

// A tier.Cache is always a cache.RootIndex, with cache.RootLookup and
// cache.RootRecorder, so that a resolver over it records and finds its
// roots at the cost the near tier offers (one map lookup, one journal
// append on localfs) whatever the tiers are. The roots are the near
// tier's when it keeps an index (localfs.Store does): they last as long
// as it does and its GC keeps what they reference. Otherwise they are
// kept in memory for the life of the Cache, which is what the resolver
// would do for a store without an index. The far tier's index, if any, is
// not used: it is shared by every runner, and the roots are one
// machine's. To find out whether the roots persist, ask the near tier:
// cache.As[cache.RootIndex](c.Near()).

// index is where the roots are kept: the near tier's, or in memory.
func (c *Cache) index() cache.RootIndex {
	if ri, ok := cache.As[cache.RootIndex](c.near); ok {
		return ri
	}
	return &c.memIndex
}

// Index implements cache.RootIndex: the near tier's roots, or those kept
// in memory.
func (c *Cache) Index(ctx context.Context) (*v1.IndexManifest, error) {
	return c.index().Index(ctx)
}

// UpdateIndex implements cache.RootIndex on the near tier's roots, or on
// those kept in memory.
func (c *Cache) UpdateIndex(ctx context.Context, fn func(*v1.IndexManifest) error) error {
	return c.index().UpdateIndex(ctx, fn)
}

// Root implements cache.RootLookup: the near tier's lookup, or a scan of
// its index when it has no lookup of its own.
func (c *Cache) Root(ctx context.Context, name string) (v1.Descriptor, bool, error) {
	return rootindex.Lookup(ctx, c.index(), name)
}

// RecordRoot implements cache.RootRecorder: the near tier's record, or an
// update of its index when it has no record of its own.
func (c *Cache) RecordRoot(ctx context.Context, desc v1.Descriptor) error {
	return rootindex.Record(ctx, c.index(), desc)
}
