package tier

import (
	"context"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

var _ cache.FileOpener = (*Cache)(nil)

// OpenFile implements cache.FileOpener with the near tier's: the files
// are the near tier's, and what SendRange sends it verifies as the near
// tier does. A blob that is only in the far tier (or a near tier that
// keeps no files) is ErrNotFound here: the tier's Get serves it, and
// fills the near tier. A hit counts as a near hit.
func (c *Cache) OpenFile(ctx context.Context, d v1.Hash) (cache.BlobFile, error) {
	fo, ok := cache.As[cache.FileOpener](c.near)
	if !ok {
		return nil, fmt.Errorf("tier: %s: the near tier keeps no files: %w", d, cache.ErrNotFound)
	}
	bf, err := fo.OpenFile(ctx, d)
	if err != nil {
		return nil, err
	}
	c.nearHits.Add(1)
	c.stats.Hits.Add(1)
	return &countedFile{BlobFile: bf, c: c}, nil
}

// countedFile counts what a near tier's BlobFile sends in the tier's
// BytesOut.
type countedFile struct {
	cache.BlobFile
	c *Cache
}

func (f *countedFile) SendRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	k, err := f.BlobFile.SendRange(ctx, w, off, n)
	f.c.stats.BytesOut.Add(uint64(k))
	return k, err
}
