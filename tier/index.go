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
// would do for a store without an index. To find out whether the roots
// persist, ask the near tier: cache.As[cache.RootIndex](c.Near()).
//
// A far tier that keeps records of its own (an s3.Cache: one object per
// reference, shared by the fleet) gets every root recorded too, and a
// root the near tier lacks is looked up there (fleet.go). Index stays
// the near tier's (a listing of one machine's roots costs nothing
// remote), and UpdateIndex changes it, removing from the far records too
// the roots it removes.

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
// those kept in memory. A root it removes is removed from the far tier's
// records too, unless another process checked it there since (fleet.go),
// so that Root does not find it again.
func (c *Cache) UpdateIndex(ctx context.Context, fn func(*v1.IndexManifest) error) error {
	var removed map[string]v1.Descriptor
	err := c.index().UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		before := namedRoots(im)
		if err := fn(im); err != nil {
			return err
		}
		after := namedRoots(im)
		removed = map[string]v1.Descriptor{}
		for name, d := range before {
			if _, ok := after[name]; !ok {
				removed[name] = d
			}
		}
		return nil
	})
	if err == nil && len(removed) > 0 {
		c.forgetFar(ctx, removed)
	}
	return err
}

func namedRoots(im *v1.IndexManifest) map[string]v1.Descriptor {
	m := map[string]v1.Descriptor{}
	for _, d := range im.Manifests {
		if name := d.Annotations[cache.AnnotationRefName]; name != "" {
			m[name] = d
		}
	}
	return m
}

// Root implements cache.RootLookup: the near tier's lookup (or a scan of
// its index when it has no lookup of its own), then the far tier's
// records when the near tier has none (fleet.go).
func (c *Cache) Root(ctx context.Context, name string) (v1.Descriptor, bool, error) {
	d, ok, err := rootindex.Lookup(ctx, c.index(), name)
	if err != nil || ok {
		return d, ok, err
	}
	return c.farRoot(ctx, name)
}

// RecordRoot implements cache.RootRecorder: the near tier's record (or an
// update of its index when it has no record of its own), then the far
// tier's records (fleet.go).
func (c *Cache) RecordRoot(ctx context.Context, desc v1.Descriptor) error {
	if err := rootindex.Record(ctx, c.index(), desc); err != nil {
		return err
	}
	c.recordFar(ctx, desc)
	return nil
}
