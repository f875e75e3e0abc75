package ocirepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/ctxio"
	"github.com/buildcache/buildcache/internal/verify"
	"github.com/buildcache/buildcache/regclient"
)

// Stat implements cache.Stater: the blob is listed in the index and the
// registry has it. A blob the registry has lost, or holds at another size
// than the index records, is dropped from the index and reported as
// cache.ErrNotFound (the second case also wraps cache.ErrCorrupt).
func (c *Cache) Stat(ctx context.Context, d v1.Hash) (int64, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return 0, err
	}
	st, err := c.index(ctx)
	if err != nil {
		return 0, c.failed("stat", d, err)
	}
	size, ok := st.entries[d]
	if !ok {
		return 0, fmt.Errorf("ocirepo: %s: %w", d, cache.ErrNotFound)
	}
	got, found, err := c.client.HeadBlob(ctx, c.repo, d)
	if err != nil {
		return 0, c.failed("stat", d, err)
	}
	if !found {
		c.dropGone(ctx, d)
		return 0, fmt.Errorf("ocirepo: %s: listed in the index but gone from the registry (entry dropped): %w", d, cache.ErrNotFound)
	}
	if got >= 0 && got != size {
		c.stats.Corruptions.Add(1)
		c.dropCorrupt(ctx, d)
		return 0, fmt.Errorf("ocirepo: %s: the registry holds %d bytes, the index %d (entry dropped): %w, %w", d, got, size, cache.ErrCorrupt, cache.ErrNotFound)
	}
	return size, nil
}

// Get implements cache.Getter. The blob is streamed from the registry and
// verified as it is read; on a mismatch the read fails with
// cache.ErrCorrupt and the entry is removed.
func (c *Cache) Get(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ocirepo: get %s: %w", d, context.Cause(ctx))
	}
	st, err := c.index(ctx)
	if err != nil {
		return nil, c.failed("get", d, err)
	}
	size, ok := st.entries[d]
	if !ok {
		c.stats.Misses.Add(1)
		return nil, fmt.Errorf("ocirepo: %s: %w", d, cache.ErrNotFound)
	}
	resp, err := c.client.Do(ctx, regclient.Request{
		Method: http.MethodGet, Repo: c.repo, Kind: "blobs", Ref: d.String(), Push: true,
		OK: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return nil, c.failed("get", d, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		regclient.Drain(resp)
		c.stats.Misses.Add(1)
		c.dropGone(ctx, d)
		return nil, fmt.Errorf("ocirepo: %s: listed in the index but gone from the registry (entry dropped): %w", d, cache.ErrNotFound)
	}
	c.stats.Hits.Add(1)
	return &lcBlobReader{c: c, ctx: ctx, d: d, body: resp.Body, v: verify.NewReader(resp.Body, d, size, cache.ErrCorrupt)}, nil
}

// lcBlobReader streams one blob, verifying it, and removes a bad entry.
type lcBlobReader struct {
	c       *Cache
	ctx     context.Context
	d       v1.Hash
	body    io.ReadCloser
	v       *verify.Reader
	dropped bool
}

func (r *lcBlobReader) Read(p []byte) (int, error) {
	n, err := r.v.Read(p)
	r.c.stats.BytesOut.Add(uint64(n))
	if err == nil || err == io.EOF {
		return n, err
	}
	if !errors.Is(err, cache.ErrCorrupt) {
		return n, fmt.Errorf("ocirepo: reading %s: %w", r.d, err)
	}
	if !r.dropped {
		r.dropped = true
		r.c.stats.Corruptions.Add(1)
		r.c.dropCorrupt(r.ctx, r.d)
	}
	return n, fmt.Errorf("ocirepo: %w (entry removed)", err)
}

func (r *lcBlobReader) Close() error { return r.body.Close() }

// Put implements cache.Putter. A blob the index lists already is not
// uploaded again and r is not read. Otherwise r is streamed to the
// registry in one monolithic upload (POST, then PUT with the digest),
// hashed on the way; only when the registry has committed it is the blob
// added to the index.
func (c *Cache) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ocirepo: put %s: %w", d, context.Cause(ctx))
	}
	unlock, err := c.locks.lock(ctx, d)
	if err != nil {
		return fmt.Errorf("ocirepo: put %s: %w", d, err)
	}
	defer unlock()
	st, err := c.index(ctx)
	if err != nil {
		return c.failed("put", d, err)
	}
	if _, ok := st.entries[d]; ok {
		return nil
	}

	vr := verify.NewReader(ctxio.Reader(ctx, r), d, size, cache.ErrDigestMismatch)
	body := &errRecorder{r: vr}
	if err := c.client.UploadBlob(ctx, c.repo, d, size, body); err != nil {
		if body.err != nil { // the bytes were wrong, the reader failed or ctx ended
			return fmt.Errorf("ocirepo: put %s: %w", d, body.err)
		}
		return c.failed("put", d, err)
	}
	n := vr.N()
	if !vr.Verified() {
		// The registry answered before reading everything: it had the blob
		// already (it commits a digest only after checking it). Record the
		// size it holds.
		got, found, err := c.client.HeadBlob(ctx, c.repo, d)
		if err != nil {
			return c.failed("put", d, err)
		}
		if !found || got < 0 {
			return c.failed("put", d, fmt.Errorf("the registry accepted the upload but cannot say its size"))
		}
		n = got
	}
	if _, err := c.edit(ctx, d, true, n); err != nil {
		return c.failed("put", d, err)
	}
	c.stats.BytesIn.Add(uint64(vr.N()))
	return nil
}

// Delete implements cache.Deleter: the blob is removed from the index,
// then the registry is asked to delete it (see WithBlobDelete).
// That second step is best effort: registries often refuse blob deletion
// (405, UNSUPPORTED, DENIED), and the entry is gone either way.
func (c *Cache) Delete(ctx context.Context, d v1.Hash) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	unlock, err := c.locks.lock(ctx, d)
	if err != nil {
		return fmt.Errorf("ocirepo: delete %s: %w", d, err)
	}
	defer unlock()
	existed, err := c.edit(ctx, d, false, 0)
	if err != nil {
		return c.failed("delete", d, err)
	}
	if !existed {
		return fmt.Errorf("ocirepo: delete %s: %w", d, cache.ErrNotFound)
	}
	if c.o.blobDelete {
		c.client.DeleteBlob(ctx, c.repo, d)
	}
	return nil
}

// Walk implements cache.Walker: it lists one version of the index, in
// digest order, without checking that the registry still has each blob.
// fn may call back into the cache.
func (c *Cache) Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error {
	st, err := c.index(ctx)
	if err != nil {
		c.countError(err)
		return fmt.Errorf("ocirepo: walk: %w", regclient.MarkOffline(err))
	}
	for _, d := range st.sorted() {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if err := fn(d, st.entries[d]); err != nil {
			return err
		}
	}
	return nil
}

// failed wraps an operation's error and counts it, unless it is the
// caller's cancellation. A registry that gave no answer is
// cache.ErrOffline, as for every backend.
func (c *Cache) failed(op string, d v1.Hash, err error) error {
	c.countError(err)
	return fmt.Errorf("ocirepo: %s %s: %w", op, d, regclient.MarkOffline(err))
}

func (c *Cache) countError(err error) {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		c.stats.Errors.Add(1)
	}
}

// dropGone removes d from the index if the registry still has no such
// blob: an in-process Put may have restored it since the caller looked.
func (c *Cache) dropGone(ctx context.Context, d v1.Hash) {
	unlock, err := c.locks.lock(ctx, d)
	if err != nil {
		return
	}
	defer unlock()
	if _, found, err := c.client.HeadBlob(ctx, c.repo, d); err != nil || found {
		return
	}
	if existed, err := c.edit(ctx, d, false, 0); err == nil && existed {
		c.stats.Evictions.Add(1)
	}
}

// dropCorrupt removes d from the index and, unless disabled, the blob from
// the registry, so that the next Put uploads it again.
func (c *Cache) dropCorrupt(ctx context.Context, d v1.Hash) {
	unlock, err := c.locks.lock(ctx, d)
	if err != nil {
		return
	}
	defer unlock()
	if _, err := c.edit(ctx, d, false, 0); err != nil {
		return
	}
	if c.o.blobDelete {
		c.client.DeleteBlob(ctx, c.repo, d)
	}
}

// errRecorder keeps the first error its reader returned other than io.EOF,
// to tell the caller's failures from the registry's after an upload.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}
