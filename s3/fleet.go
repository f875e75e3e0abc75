package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
)

// What the processes of a fleet share in the bucket besides blobs, all
// under <prefix>buildcache/ (package doc, # Fleet):
//
//	buildcache/records/<reference>   a tag's record: its root and any revalidation claim (records.go)
//	buildcache/leases/<id>           a pull in progress: the blobs it wrote or looked at (lease.go)
//	buildcache/gc/<start>-<window>-<id>  a collector deleting (sweep.go)
const (
	fleetDir   = "buildcache/"
	recordsDir = fleetDir + "records/"
	leasesDir  = fleetDir + "leases/"
	sweepDir   = fleetDir + "gc/"

	// maxSmallObject bounds what is read of a record, a lease or a
	// marker: they are small, and a larger object is not ours.
	maxSmallObject = 4 << 20
)

func (c *Cache) fleetKey(dir, name string) string { return c.prefix + dir + name }

// newID is a name for a lease or a collector that no other process
// picks: the host, the process and 8 random bytes.
func newID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, host)
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// serverNow is the endpoint's clock as a response's Date header gives
// it, so that ages of objects (their LastModified, the endpoint's clock
// too) are judged without trusting this machine's clock; the local
// clock when the response had none.
func (c *Cache) serverNow(meta middleware.Metadata) time.Time {
	if c.serverClock != nil {
		return c.serverClock()
	}
	if t, ok := awsmw.GetServerTime(meta); ok {
		return t
	}
	return c.opts.now()
}

// getSmall reads a small object whole: its bytes, its ETag and the
// response's metadata. A missing key is isNotFound.
func (c *Cache) getSmall(ctx context.Context, key string) ([]byte, string, *time.Time, error) {
	out, err := c.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)}, noResponseChecksum)
	if err != nil {
		return nil, "", nil, err
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxSmallObject+1))
	if err != nil {
		return nil, "", nil, err
	}
	if len(b) > maxSmallObject {
		return nil, "", nil, fmt.Errorf("s3://%s/%s is larger than %d bytes", c.bucket, key, maxSmallObject)
	}
	return b, aws.ToString(out.ETag), out.LastModified, nil
}

// putJSON writes v at key. With ifMatch, only over the object of that
// ETag; with create, only if there is none (S3 conditional writes);
// otherwise unconditionally. It returns the new object's ETag.
func (c *Cache) putJSON(ctx context.Context, key string, v any, ifMatch string, create bool) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	in := &awss3.PutObjectInput{
		Bucket:      aws.String(c.bucket),
		Key:         aws.String(key),
		Body:        bytes.NewReader(b),
		ContentType: aws.String("application/json"),
	}
	switch {
	case ifMatch != "":
		in.IfMatch = aws.String(ifMatch)
	case create:
		in.IfNoneMatch = aws.String("*")
	}
	out, err := c.client.PutObject(ctx, in)
	if err != nil {
		return "", err
	}
	c.bucketOK.Store(true)
	return aws.ToString(out.ETag), nil
}

// isConflict: a conditional write or delete found the object other than
// it expected (412; 409 while another conditional write is in flight;
// 404 NoSuchKey for an If-Match on a key deleted since, as versitygw
// answers).
func isConflict(err error) bool {
	return isPreconditionFailed(err) || isConditionalConflict(err) || isNotFound(err)
}

// deleteKey removes key, only if it is still the object of etag when
// etag is given. A key already gone, or replaced since, is no error.
func (c *Cache) deleteKey(ctx context.Context, key, etag string) error {
	in := &awss3.DeleteObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)}
	if etag != "" {
		in.IfMatch = aws.String(etag)
	}
	_, err := c.client.DeleteObject(ctx, in)
	switch {
	case err == nil, isNotFound(err), isPreconditionFailed(err):
		return nil
	case etag != "" && (apiCode(err) == "NotImplemented" || httpStatus(err) == 501):
		in.IfMatch = nil // a store without conditional deletes
		_, err = c.client.DeleteObject(ctx, in)
	}
	return err
}

// listKeys calls fn for every object under prefix, a page at a time,
// with the server's clock of the page's response.
func (c *Cache) listKeys(ctx context.Context, prefix string, fn func(key string, size int64, modified time.Time, etag string, serverNow time.Time) error) error {
	in := &awss3.ListObjectsV2Input{Bucket: aws.String(c.bucket), Prefix: aws.String(prefix)}
	if c.listPageSize > 0 {
		in.MaxKeys = aws.Int32(c.listPageSize)
	}
	pages := awss3.NewListObjectsV2Paginator(c.client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return c.remoteErr("list", prefix, err)
		}
		c.bucketOK.Store(true)
		now := c.serverNow(page.ResultMetadata)
		for _, obj := range page.Contents {
			if err := fn(aws.ToString(obj.Key), aws.ToInt64(obj.Size), aws.ToTime(obj.LastModified), aws.ToString(obj.ETag), now); err != nil {
				return err
			}
		}
	}
	return nil
}
