package s3

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/memo"
	"github.com/buildcache/buildcache/s3/s3loc"
)

// Defaults, named the way BuildKit's type=s3 cache names its attributes.
const (
	// DefaultBlobsPrefix is where blobs go under the prefix: BuildKit's
	// blobs_prefix default.
	DefaultBlobsPrefix = s3loc.DefaultBlobsPrefix
	// DefaultManifestsPrefix is where BuildKit keeps its cache manifests
	// under the prefix: its manifests_prefix default.
	DefaultManifestsPrefix = s3loc.DefaultManifestsPrefix
	// DefaultPartSize is the multipart threshold and part size: S3's
	// minimum part size, so that a large Put buffers little.
	DefaultPartSize = 5 << 20
	// DefaultConcurrency is how many parts of one Put are uploaded at once.
	DefaultConcurrency = 2

	minPartSize = 5 << 20 // S3's minimum for every part but the last
	maxPartSize = 5 << 30 // S3's maximum part size
	// maxCopySize is the largest object CopyObject copies in one request;
	// touch-refresh skips larger ones.
	maxCopySize = 5 << 30
	// cleanupTimeout bounds the requests that clean up after a failure
	// (abort a multipart upload, remove a corrupt object), which run on a
	// fresh context because the caller's may be what failed.
	cleanupTimeout = 30 * time.Second
)

// Cache is a cache.LayerCache in an S3 bucket, laid out the way BuildKit's
// type=s3 cache lays out its blobs. It is safe for concurrent use, also by
// many processes and machines sharing one bucket.
type Cache struct {
	given    *awss3.Client // the caller's, for As
	client   *awss3.Client // given's configuration with the bounds (boundClient)
	uploader *transfermanager.Client
	bucket   string
	prefix   string
	endpoint string // for error messages: the base endpoint, or the region
	opts     options

	stats     cache.Counters
	bucketOK  atomic.Bool  // the bucket has been seen to exist
	downUntil atomic.Int64 // the endpoint is known down until then (Unix ns); 0: not

	listPageSize int32 // ListObjectsV2's MaxKeys; 0: the server's default (1000)

	// The fleet's shared state (fleet.go): this process's name in
	// claims, the records' ETags, and test hooks.
	holder      string
	records     memo.Map[string, recordState]                    // the records' ETags, at most maxRememberedETags
	serverClock func() time.Time                                 // tests: the endpoint's clock
	sleepHook   func(ctx context.Context, d time.Duration) error // tests: waiting
	sweepWaits  atomic.Uint64                                    // records that waited for a collector
	claimsWon   atomic.Uint64
	claimsBusy  atomic.Uint64
}

var (
	_ cache.LayerCacheCloser = (*Cache)(nil)
	_ cache.StatsReporter    = (*Cache)(nil)
)

type options struct {
	blobsPrefix     string
	manifestsPrefix string
	partSize        int64
	concurrency     int
	touchRefresh    time.Duration
	timeouts        Timeouts
	now             func() time.Time
	leaseTTL        time.Duration
	claimTTL        time.Duration
}

// Option configures a Cache.
type Option func(*options) error

// WithBlobsPrefix sets where blobs go under the prefix, as BuildKit's
// blobs_prefix attribute does. Default "blobs/". A prefix with a "." or
// ".." path segment, a backslash, a control character or invalid UTF-8 is
// an error, as it is in New's prefix.
func WithBlobsPrefix(p string) Option {
	return func(o *options) error {
		if err := subPrefix("WithBlobsPrefix", p); err != nil {
			return err
		}
		o.blobsPrefix = p
		return nil
	}
}

// WithManifestsPrefix sets where BuildKit's cache manifests live under the
// prefix, as its manifests_prefix attribute does (see ManifestKey).
// Default "manifests/". It is checked as WithBlobsPrefix is.
func WithManifestsPrefix(p string) Option {
	return func(o *options) error {
		if err := subPrefix("WithManifestsPrefix", p); err != nil {
			return err
		}
		o.manifestsPrefix = p
		return nil
	}
}

// WithPartSize sets the multipart threshold and part size: a blob of at
// most n bytes is uploaded with one PutObject, a larger one in parts of n
// bytes. A Put buffers up to (concurrency + 2) × n bytes. Default 5 MiB,
// the smallest part S3 accepts; at most 5 GiB.
func WithPartSize(n int64) Option {
	return func(o *options) error {
		if n < minPartSize || n > maxPartSize {
			return fmt.Errorf("s3: WithPartSize(%d): must be between 5 MiB and 5 GiB", n)
		}
		o.partSize = n
		return nil
	}
}

// WithConcurrency sets how many parts of one multipart Put are in flight
// at once. Default 2: with the default part size a Put then buffers
// about 20 MiB.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("s3: WithConcurrency(%d): must be at least 1", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithTouchRefresh makes Get (after the blob verified) and Put (of a blob
// already there) copy a blob onto itself when it was last modified more
// than d ago, as BuildKit's touch_refresh does, so that a bucket lifecycle
// rule expiring objects by age removes only blobs nobody uses. Objects
// larger than 5 GiB are not refreshed. Default 0: never.
func WithTouchRefresh(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("s3: WithTouchRefresh(%v): must not be negative", d)
		}
		o.touchRefresh = d
		return nil
	}
}

// WithLeaseTTL sets how long a lease (Lease) keeps its blobs from the
// bucket's collectors after its holder last renewed it: a process that
// dies in the middle of a pull holds them that long. The holder renews
// it every quarter of d. Default DefaultLeaseTTL (10 minutes); at least
// a second.
func WithLeaseTTL(d time.Duration) Option {
	return func(o *options) error { return atLeastASecond("WithLeaseTTL", d, &o.leaseTTL) }
}

// WithClaimTTL sets how long a claim on a reference's revalidation
// (ClaimRevalidation) keeps other processes from asking the registry
// when its holder neither records nor releases it (it died). Default
// DefaultClaimTTL (1 minute); at least a second.
func WithClaimTTL(d time.Duration) Option {
	return func(o *options) error { return atLeastASecond("WithClaimTTL", d, &o.claimTTL) }
}

// atLeastASecond sets *to to d, a TTL of the fleet's shared state, which
// must be at least a second.
func atLeastASecond(option string, d time.Duration, to *time.Duration) error {
	if d < time.Second {
		return fmt.Errorf("s3: %s(%v): must be at least 1s", option, d)
	}
	*to = d
	return nil
}

// WithClock replaces time.Now, for tests of touch-refresh and of how
// long an endpoint is known down.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("s3: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}

// New returns a Cache of the blobs under prefix in bucket. prefix is used
// as given, as BuildKit uses its prefix attribute: "ci/" puts blobs at
// "ci/blobs/sha256:<hex>". A prefix that starts with "/", has a "." or
// ".." path segment ("../x/"), a backslash, a control character or invalid
// UTF-8 is an error, as is a client whose BaseEndpoint carries
// credentials ("http://key:secret@host"). New makes no request; Check
// does. The Cache's requests go through a client of its own made from
// client's configuration, with every wait bounded (WithTimeouts; see the
// package documentation, # Timeouts); client itself is left as it was.
func New(client *awss3.Client, bucket, prefix string, opts ...Option) (*Cache, error) {
	o := options{
		blobsPrefix:     DefaultBlobsPrefix,
		manifestsPrefix: DefaultManifestsPrefix,
		partSize:        DefaultPartSize,
		concurrency:     DefaultConcurrency,
		timeouts: Timeouts{
			Connect:        DefaultConnectTimeout,
			ResponseHeader: DefaultResponseHeaderTimeout,
			Stall:          DefaultStallTimeout,
		},
		now:      time.Now,
		leaseTTL: DefaultLeaseTTL,
		claimTTL: DefaultClaimTTL,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if client == nil {
		return nil, errors.New("s3: New: nil client")
	}
	if bucket == "" {
		return nil, errors.New("s3: New: empty bucket name")
	}
	if strings.ContainsAny(bucket, "/?#") {
		return nil, fmt.Errorf("s3: New: invalid bucket name %q", bucket)
	}
	if err := checkPrefixes(prefix, o); err != nil {
		return nil, err
	}
	c := &Cache{
		given:  client,
		bucket: bucket,
		prefix: prefix,
		opts:   o,
		holder: newID(),
	}
	c.records.Max = maxRememberedETags
	co := client.Options()
	switch {
	case co.BaseEndpoint != nil && *co.BaseEndpoint != "":
		if err := checkEndpoint(*co.BaseEndpoint); err != nil {
			return nil, err
		}
		c.endpoint = *co.BaseEndpoint
	case co.Region != "":
		c.endpoint = "AWS S3 in " + co.Region
	default:
		c.endpoint = "AWS S3 (no region configured)"
	}
	// Per-operation options are the SDK's advice for such overrides,
	// but the transfer manager takes none for the requests it makes: a
	// client of our own, made from the caller's configuration, bounds
	// every request in one place (see doc.go, # Timeouts).
	c.client = awss3.New(co, c.boundClient)
	c.uploader = transfermanager.New(c.client, func(t *transfermanager.Options) {
		t.PartSizeBytes = o.partSize
		t.MultipartUploadThreshold = o.partSize
		t.Concurrency = o.concurrency
		t.ChecksumAlgorithm = tmtypes.ChecksumAlgorithmSha256
		t.FailTimeout = cleanupTimeout
	})
	return c, nil
}

// Bucket is the bucket's name.
func (c *Cache) Bucket() string { return c.bucket }

// Prefix is the key prefix, as given to New.
func (c *Cache) Prefix() string { return c.prefix }

// Endpoint is the S3 endpoint the client talks to, as error messages name
// it.
func (c *Cache) Endpoint() string { return c.endpoint }

// BlobKey is the object key of blob d: prefix + blobs prefix + "sha256:<hex>",
// exactly where BuildKit's type=s3 cache reads and writes it. d must be
// valid (cache.ValidateDigest).
func (c *Cache) BlobKey(d v1.Hash) string { return c.blobsKeyPrefix() + d.String() }

// ManifestKey is the object key of BuildKit's cache manifest called name
// (its name attribute, default "buildkit"): prefix + manifests prefix + name.
func (c *Cache) ManifestKey(name string) string {
	return c.prefix + c.opts.manifestsPrefix + name
}

func (c *Cache) blobsKeyPrefix() string { return c.prefix + c.opts.blobsPrefix }

// Stats reports what the cache has done since it was created, in this
// process.
func (c *Cache) Stats() cache.Stats { return c.stats.Snapshot() }

// As gives access to the underlying client: pass a **s3.Client (the
// aws-sdk-go-v2 one) to get the client given to New (its requests are
// not bounded by WithTimeouts). It reports whether i was of a supported
// type.
func (c *Cache) As(i any) bool {
	p, ok := i.(**awss3.Client)
	if !ok {
		return false
	}
	*p = c.given
	return true
}

// Check makes one request (a ListObjectsV2 of at most one key) to find out
// whether the bucket exists and the credentials may read it. Its error
// names the bucket and the endpoint.
func (c *Cache) Check(ctx context.Context) error {
	_, err := c.client.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{
		Bucket:  aws.String(c.bucket),
		Prefix:  aws.String(c.blobsKeyPrefix()),
		MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return c.remoteErr("check", "", err)
	}
	c.bucketOK.Store(true)
	return nil
}

// Stat implements cache.Stater with one HeadObject.
func (c *Cache) Stat(ctx context.Context, d v1.Hash) (int64, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return 0, err
	}
	if err := c.underLease(ctx, d); err != nil {
		return 0, err
	}
	key := c.BlobKey(d)
	head, err := c.head(ctx, key)
	if err != nil {
		if isNotFound(err) {
			return 0, c.notFound(ctx, "stat", d, key)
		}
		return 0, c.remoteErr("stat "+d.String(), key, err)
	}
	return aws.ToInt64(head.ContentLength), nil
}

func (c *Cache) head(ctx context.Context, key string) (*awss3.HeadObjectOutput, error) {
	return c.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)})
}

// Delete implements cache.Deleter: a HeadObject, so that a missing blob is
// ErrNotFound (S3's DeleteObject succeeds either way), then DeleteObject.
func (c *Cache) Delete(ctx context.Context, d v1.Hash) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	key := c.BlobKey(d)
	if _, err := c.head(ctx, key); err != nil {
		if isNotFound(err) {
			return c.notFound(ctx, "delete", d, key)
		}
		return c.remoteErr("delete "+d.String(), key, err)
	}
	if _, err := c.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)}); err != nil {
		return c.remoteErr("delete "+d.String(), key, err)
	}
	return nil
}

// Walk implements cache.Walker with a paginated ListObjectsV2 of the blobs
// prefix. Keys that are not "sha256:<64 hex digits>" directly under it are
// not blobs and are skipped.
func (c *Cache) Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error {
	prefix := c.blobsKeyPrefix()
	return c.listKeys(ctx, prefix, func(key string, size int64, _ time.Time, _ string, _ time.Time) error {
		d, err := cache.ParseDigest(strings.TrimPrefix(key, prefix))
		if err != nil {
			return nil
		}
		return fn(d, size)
	})
}

// SweepUploads aborts the multipart uploads under the blobs prefix that
// were started more than olderThan ago: what a process that crashed or
// lost the server in the middle of a Put leaves behind. Such uploads are
// never visible as objects, but the server keeps their parts (and may bill
// for them) until they are aborted. A bucket lifecycle rule
// (AbortIncompleteMultipartUpload) does the same on AWS. It returns how
// many it aborted.
func (c *Cache) SweepUploads(ctx context.Context, olderThan time.Duration) (int, error) {
	prefix := c.blobsKeyPrefix()
	cutoff := c.opts.now().Add(-olderThan)
	pages := awss3.NewListMultipartUploadsPaginator(c.client, &awss3.ListMultipartUploadsInput{
		Bucket: aws.String(c.bucket),
		Prefix: aws.String(prefix),
	})
	n := 0
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return n, c.remoteErr("list multipart uploads", prefix, err)
		}
		for _, u := range page.Uploads {
			if u.Initiated != nil && u.Initiated.After(cutoff) {
				continue
			}
			_, err := c.client.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{
				Bucket: aws.String(c.bucket), Key: u.Key, UploadId: u.UploadId,
			})
			if err != nil && !isNoSuchUpload(err) {
				return n, c.remoteErr("abort multipart upload", aws.ToString(u.Key), err)
			}
			n++
		}
	}
	return n, nil
}

// touch copies key onto itself with new metadata, so that its
// LastModified is now, if it was modified more than the touch-refresh
// interval ago. Failures are counted, not returned: the blob is fine.
func (c *Cache) touch(ctx context.Context, key string, size int64, modified *time.Time) {
	if c.opts.touchRefresh <= 0 || modified == nil || size > maxCopySize || ctx.Value(noTouchKey{}) != nil {
		return
	}
	now := c.opts.now()
	if now.Sub(*modified) <= c.opts.touchRefresh {
		return
	}
	_, err := c.client.CopyObject(ctx, &awss3.CopyObjectInput{
		Bucket:            aws.String(c.bucket),
		Key:               aws.String(key),
		CopySource:        aws.String(copySource(c.bucket, key)),
		MetadataDirective: s3types.MetadataDirectiveReplace,
		Metadata:          map[string]string{"buildcache-touched": now.UTC().Format(time.RFC3339)},
	})
	if err != nil && ctx.Err() == nil {
		c.stats.Errors.Add(1)
	}
}

// copySource is CopyObject's "bucket/key", URL-encoded as S3 expects.
func copySource(bucket, key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return bucket + "/" + strings.Join(parts, "/")
}

// Close implements io.Closer. The S3 client is the caller's (New took
// it), and so are its connections: Close does nothing, and the Cache
// stays usable.
func (c *Cache) Close() error { return nil }
