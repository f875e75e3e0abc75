package tier

import (
	"context"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

var _ cache.Ingester = (*Cache)(nil)

// Ingest implements cache.Ingester with the near tier's ingestion: the
// blob is written once, into the near tier, and its Commit is the near
// tier's followed by the far write a Put makes (synchronous, or in the
// background with WithAsyncFar), so the whole tier holds it as if it had
// been Put. A near tier that cannot ingest makes Ingest fail with
// errors.ErrUnsupported, for the caller to Put instead.
func (c *Cache) Ingest(ctx context.Context, d v1.Hash, size int64) (cache.Ingestion, error) {
	ing, ok := cache.As[cache.Ingester](c.near)
	if !ok {
		return nil, fmt.Errorf("tier: the near tier (%T) cannot ingest: %w", c.near, errors.ErrUnsupported)
	}
	in, err := ing.Ingest(ctx, d, size)
	if err != nil {
		return nil, err
	}
	return &ingestion{Ingestion: in, c: c, d: d, size: size}, nil
}

// ingestion is the near tier's, with a Commit that reaches the far tier.
type ingestion struct {
	cache.Ingestion
	c    *Cache
	d    v1.Hash
	size int64
}

func (in *ingestion) Commit(ctx context.Context) error {
	return in.c.put(ctx, in.d, in.size, nil, func(ctx context.Context, _ v1.Hash, _ int64, _ io.Reader) error {
		return in.Ingestion.Commit(ctx)
	})
}
