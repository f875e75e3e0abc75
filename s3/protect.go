package s3

import (
	"context"
	"errors"
	"fmt"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/reach"
)

// statConcurrency bounds the HEADs one protect makes at once.
const statConcurrency = 8

// protect makes what desc reaches in the bucket safe from every
// collector before a record of desc is written, and until release
// (called once the record is written): the blobs are named in the
// caller's lease (or one of protect's own) before they are looked at,
// and a lease write waits out any collector sweeping (sweep.go), so
// what is there now stays. The top must be there (else the error wraps
// cache.ErrNotFound); blobs the image references but the bucket does
// not hold (a mirror fetches layers when a client asks for them) are
// not required.
func (c *Cache) protect(ctx context.Context, desc v1.Descriptor) (_ func(), err error) {
	release := func() {}
	if c.leaseOf(ctx) == nil {
		var end func() error
		if ctx, end, err = c.Lease(ctx); err != nil {
			return nil, err
		}
		release = func() { _ = end() }
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	present, err := c.presentReach(ctx, desc)
	if err != nil {
		return nil, err
	}
	if !present.Has(desc.Digest) {
		return nil, fmt.Errorf("s3: recording %s: its top %s is not in s3://%s: %w", desc.Annotations[cache.AnnotationRefName], desc.Digest, c.bucket, cache.ErrNotFound)
	}
	if l := c.leaseOf(ctx); l != nil {
		if err := l.fresh(ctx); err != nil {
			return nil, err
		}
	}
	return release, nil
}

// presentReach walks desc in the bucket, naming every blob in ctx's
// lease before looking at it, and returns those that are there.
func (c *Cache) presentReach(ctx context.Context, desc v1.Descriptor) (reach.Set, error) {
	present := reach.Set{}
	var leaves []v1.Hash
	get := func(ctx context.Context, d v1.Descriptor) ([]byte, error) {
		b, err := c.readManifest(ctx, d.Digest)
		if err == nil {
			present.Add(d.Digest)
		}
		return b, err
	}
	if _, err := reach.Walk(ctx, desc, get, reach.Set{}, func(d v1.Hash, manifest bool) {
		if !manifest {
			leaves = append(leaves, d)
		}
	}); err != nil {
		return nil, err
	}
	if err := c.underLease(ctx, leaves...); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	err := c.statAll(ctx, leaves, func(d v1.Hash, err error) error {
		switch {
		case err == nil:
			mu.Lock()
			present.Add(d)
			mu.Unlock()
		case !errors.Is(err, cache.ErrNotFound):
			return err
		}
		return nil
	})
	return present, err
}

// readManifest reads a manifest through the verifying Get.
func (c *Cache) readManifest(ctx context.Context, d v1.Hash) ([]byte, error) {
	return reach.GetterOf(c.Get)(ctx, v1.Descriptor{Digest: d})
}

// statAll stats each of ds, statConcurrency at a time, and hands each
// result to fn; fn's first error ends it.
func (c *Cache) statAll(ctx context.Context, ds []v1.Hash, fn func(v1.Hash, error) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(statConcurrency)
	for _, d := range ds {
		g.Go(func() error {
			_, err := c.Stat(gctx, d)
			return fn(d, err)
		})
	}
	return g.Wait()
}

func keysOf(s reach.Set) []v1.Hash {
	out := make([]v1.Hash, 0, len(s))
	for k := range s {
		out = append(out, k.Hash())
	}
	return out
}
