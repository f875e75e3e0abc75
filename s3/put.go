package s3

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/ctxio"
	"github.com/buildcache/buildcache/internal/verify"
)

// Put implements cache.Putter.
//
// A blob that is already there with the expected size is not uploaded
// again (and r is not read). Otherwise the bytes are hashed while they
// stream to S3 and the upload is created only if nothing is at the key
// (If-None-Match: *), so two runners writing one blob do not fight: the
// one that finds the key taken checks the size of what is there and
// succeeds. Every request carries a SHA-256 checksum that the server
// checks; a blob smaller than the part size goes in one PutObject whose
// checksum is the blob's digest itself.
//
// A blob of at least the part size goes in parts (the SDK's transfer
// manager), and the upload is completed only after the whole stream
// matched d and size. If it does not match, the reader fails, or ctx is
// cancelled, the multipart upload is aborted and no object appears.
func (c *Cache) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3: put %s: %w", d, err)
	}
	if err := c.underLease(ctx, d); err != nil {
		return err
	}
	key := c.BlobKey(d)
	head, err := c.head(ctx, key)
	switch {
	case err == nil:
		c.bucketOK.Store(true)
		have := aws.ToInt64(head.ContentLength)
		if size < 0 || have == size {
			c.touch(ctx, key, have, head.LastModified)
			return nil
		}
		// A blob's size follows from its digest: an object of another
		// size is damaged. Replace it.
		c.stats.Corruptions.Add(1)
		if err := c.removeBad(ctx, key, head.ETag); err != nil {
			return c.remoteErr(fmt.Sprintf("put %s: removing a damaged object of %d bytes", d, have), key, err)
		}
	case !isNotFound(err):
		return c.remoteErr("put "+d.String(), key, err)
	}
	return c.upload(ctx, d, size, key, r)
}

func (c *Cache) upload(ctx context.Context, d v1.Hash, size int64, key string, r io.Reader) error {
	src := &readErr{r: ctxio.Reader(ctx, r)}
	vr := verify.NewReader(src, d, size, cache.ErrDigestMismatch)
	in := &transfermanager.UploadObjectInput{
		Bucket:            aws.String(c.bucket),
		Key:               aws.String(key),
		Body:              vr,
		IfNoneMatch:       aws.String("*"),
		ChecksumAlgorithm: tmtypes.ChecksumAlgorithmSha256,
	}
	if size >= 0 {
		in.ContentLength = aws.Int64(size) // lets the server check a multipart upload's total size too
		if size < c.opts.partSize {
			// One PutObject: its checksum is the digest, so the server
			// itself refuses bytes that are not the blob.
			sum, _ := hex.DecodeString(d.Hex)
			in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(sum))
		}
	}
	rc := &raceClient{S3APIClient: c.client}
	out, err := c.uploader.UploadObject(ctx, in, func(o *transfermanager.Options) { o.S3 = rc })
	if err == nil && rc.lost {
		return c.lostRace(ctx, d, size, key)
	}
	if err == nil {
		if !vr.Verified() {
			// The uploader reads to EOF before it completes, so this
			// cannot happen; if it did, the object must not stay.
			c.removeBad(ctx, key, out.ETag)
			return fmt.Errorf("s3: put %s: upload completed before the stream was verified: %w", d, cache.ErrDigestMismatch)
		}
		c.bucketOK.Store(true)
		c.stats.BytesIn.Add(uint64(vr.N()))
		return nil
	}
	// Nothing was stored: a single PutObject is sent only after the whole
	// blob was read and verified, and a multipart upload is aborted.
	// Keep the cause in the chain even where the SDK reports the failed
	// abort that followed it instead.
	cause := src.err
	if cause == nil {
		cause = ctx.Err()
	}
	switch {
	case errors.Is(err, cache.ErrDigestMismatch):
		return fmt.Errorf("s3: put %s to s3://%s/%s: %w", d, c.bucket, key, err)
	case cause != nil:
		if !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		return fmt.Errorf("s3: put %s to s3://%s/%s: %w", d, c.bucket, key, err)
	case isPreconditionFailed(err) || isConditionalConflict(err):
		return c.lostRace(ctx, d, size, key)
	}
	// A server may refuse a conditional create before it has read the
	// body and close the connection while the body is still being sent:
	// the client then sees a reset instead of the 412. If the blob is
	// there now, another writer stored it. (A server known down went
	// silent: not worth asking.)
	if !c.knownDown() {
		if head, herr := c.head(ctx, key); herr == nil && (size < 0 || aws.ToInt64(head.ContentLength) == size) {
			return nil
		}
	}
	return c.remoteErr("put "+d.String(), key, err)
}

// lostRace handles a conditional create that found the key taken: another
// writer stored the blob after our HeadObject. Our bytes were verified, so
// theirs are the same blob if the size agrees.
func (c *Cache) lostRace(ctx context.Context, d v1.Hash, size int64, key string) error {
	head, err := c.head(ctx, key)
	switch {
	case err == nil:
		have := aws.ToInt64(head.ContentLength)
		if size < 0 || have == size {
			return nil
		}
		c.stats.Corruptions.Add(1)
		if rerr := c.removeBad(ctx, key, head.ETag); rerr != nil {
			return c.remoteErr("put "+d.String(), key, rerr)
		}
		return fmt.Errorf("s3: put %s: another writer stored %d bytes at s3://%s/%s, not %d; removed them, try again: %w",
			d, have, c.bucket, key, size, cache.ErrCorrupt)
	case isNotFound(err):
		return nil // stored by the other writer, and deleted since
	}
	return c.remoteErr("put "+d.String(), key, err)
}

// removeBad deletes an object found damaged, if it is still the object
// with etag: a concurrent writer may have replaced it with a good copy.
// It runs on a fresh context so that a cancelled caller still cleans up.
func (c *Cache) removeBad(ctx context.Context, key string, etag *string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	in := &awss3.DeleteObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key), IfMatch: etag}
	_, err := c.client.DeleteObject(ctx, in)
	switch {
	case err == nil, isNotFound(err), isPreconditionFailed(err):
		return nil // gone, or replaced since
	case etag != nil && (apiCode(err) == "NotImplemented" || httpStatus(err) == 501):
		// A server without conditional deletes: delete unconditionally.
		in.IfMatch = nil
		_, err = c.client.DeleteObject(ctx, in)
	}
	return err
}

// readErr remembers the error of the caller's reader, so that Put can tell
// it from an error of S3.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// raceClient is the S3 client the transfer manager uses for one Put. A
// CompleteMultipartUpload refused with 412 means another writer created
// the key first, which in a CI fleet uploading the same layers is common,
// not a failure: raceClient aborts the upload itself and reports success
// to the transfer manager (which would otherwise log the 412 on the
// standard logger), and Put sorts it out in lostRace.
type raceClient struct {
	transfermanager.S3APIClient
	lost bool // set by the transfer manager's goroutine, read after it returns
}

func (r *raceClient) CompleteMultipartUpload(ctx context.Context, in *awss3.CompleteMultipartUploadInput, opts ...func(*awss3.Options)) (*awss3.CompleteMultipartUploadOutput, error) {
	out, err := r.S3APIClient.CompleteMultipartUpload(ctx, in, opts...)
	if err == nil || !(isPreconditionFailed(err) || isConditionalConflict(err)) {
		return out, err
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if _, aerr := r.S3APIClient.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{
		Bucket: in.Bucket, Key: in.Key, UploadId: in.UploadId,
	}); aerr != nil && !isNoSuchUpload(aerr) {
		return out, err // let the transfer manager try to abort, and fail
	}
	r.lost = true
	return &awss3.CompleteMultipartUploadOutput{Bucket: in.Bucket, Key: in.Key}, nil
}
