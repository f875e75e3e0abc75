package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
)

// Get implements cache.Getter with one streaming GetObject. The stream is
// verified against d as it is read: an object replaced or damaged behind
// the cache's back fails the read with ErrCorrupt and is deleted. With
// WithTouchRefresh, a blob that verified is refreshed if it is old.
func (c *Cache) Get(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("s3: get %s: %w", d, err)
	}
	if err := c.underLease(ctx, d); err != nil {
		return nil, err
	}
	key := c.BlobKey(d)
	out, err := c.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)}, noResponseChecksum)
	if err != nil {
		if isNotFound(err) {
			c.stats.Misses.Add(1)
			return nil, c.notFound(ctx, "get", d, key)
		}
		return nil, c.remoteErr("get "+d.String(), key, err)
	}
	c.bucketOK.Store(true)
	c.stats.Hits.Add(1)
	size := int64(-1)
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	body := newReadahead(out.Body)
	return &blobReader{
		c: c, ctx: ctx, d: d, key: key, size: size,
		etag: out.ETag, modified: out.LastModified,
		body: body,
		v:    verify.NewReader(body, d, size, cache.ErrCorrupt),
	}, nil
}

// noResponseChecksum turns off the SDK's own check of a checksum the
// server sends with the object: Get verifies the digest itself, which is
// stronger, and a second hash of the same bytes would only cost CPU.
func noResponseChecksum(o *awss3.Options) {
	o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
}

// blobReader streams one object, verifying it.
type blobReader struct {
	c        *Cache
	ctx      context.Context
	d        v1.Hash
	key      string
	size     int64
	etag     *string
	modified *time.Time
	body     io.ReadCloser
	v        *verify.Reader
	done     bool  // read to the end and verified
	err      error // sticky failure
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.v.Read(p)
	r.c.stats.BytesOut.Add(uint64(n))
	switch {
	case err == nil:
	case err == io.EOF:
		if !r.done {
			r.done = true
			r.c.touch(r.ctx, r.key, r.size, r.modified)
		}
	default:
		r.err = r.fail(err)
		err = r.err
	}
	return n, err
}

// fail handles a read error: a mismatch deletes the object.
func (r *blobReader) fail(err error) error {
	if !errors.Is(err, cache.ErrCorrupt) {
		return r.c.describe("reading "+r.d.String(), r.key, err)
	}
	r.c.stats.Corruptions.Add(1)
	if derr := r.c.removeBad(r.ctx, r.key, r.etag); derr != nil {
		r.c.stats.Errors.Add(1)
		return fmt.Errorf("s3: s3://%s/%s: %w (removing it failed: %v)", r.c.bucket, r.key, err, derr)
	}
	return fmt.Errorf("s3: s3://%s/%s: %w (object removed)", r.c.bucket, r.key, err)
}

// WriteTo copies with a large buffer: io.Copy would otherwise use the
// destination's ReadFrom, and io.Discard's reads 8 KiB at a time, a
// system call each.
func (r *blobReader) WriteTo(w io.Writer) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	// Hide both sides' WriteTo/ReadFrom so the copy uses our buffer.
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, *bp)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func (r *blobReader) Close() error { return r.body.Close() }
