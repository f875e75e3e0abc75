package tier

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// A tier.Cache is always a cache.RootIndex, so that whoever looks for one
// (registry.NewResolver does, with a type assertion) finds it whatever the
// tiers are. The roots are the near tier's when it keeps an index
// (localfs.Store does): they last as long as it does and its GC keeps
// what they reference. Otherwise they are kept in memory for the life of
// the Cache, which is what the resolver would do for a store without an
// index. The far tier's index, if any, is not used: it is shared by every
// runner, and the roots are one machine's. To find out whether the roots
// persist, ask the near tier: c.Near().(cache.RootIndex).

// Index implements cache.RootIndex: the near tier's roots, or those kept
// in memory.
func (c *Cache) Index(ctx context.Context) (*v1.IndexManifest, error) {
	if ri, ok := c.near.(cache.RootIndex); ok {
		return ri.Index(ctx)
	}
	return c.memIndex.Index(ctx)
}

// UpdateIndex implements cache.RootIndex on the near tier's roots, or on
// those kept in memory.
func (c *Cache) UpdateIndex(ctx context.Context, fn func(*v1.IndexManifest) error) error {
	if ri, ok := c.near.(cache.RootIndex); ok {
		return ri.UpdateIndex(ctx, fn)
	}
	return c.memIndex.UpdateIndex(ctx, fn)
}
