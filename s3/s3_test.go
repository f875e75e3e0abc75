package s3_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
)

// newCache returns a Cache of a fresh bucket on srv.
func newCache(t testing.TB, srv *testserver.S3Server, opts ...s3cache.Option) *s3cache.Cache {
	t.Helper()
	c, err := s3cache.New(srv.Client(), srv.NewBucket(t), "ci/", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func clientOf(t testing.TB, c *s3cache.Cache) *awss3.Client {
	t.Helper()
	var client *awss3.Client
	if !c.As(&client) {
		t.Fatal("As(**s3.Client) = false")
	}
	return client
}

// corrupt overwrites the object of d through the S3 API with damaged
// bytes, as another client with write access to the bucket could.
func corrupt(t *testing.T, lc cache.LayerCache, d v1.Hash, how cachetest.Corruption) {
	t.Helper()
	c := lc.(*s3cache.Cache)
	client := clientOf(t, c)
	key := c.BlobKey(d)
	out, err := client.GetObject(t.Context(), &awss3.GetObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	switch how {
	case cachetest.Truncate:
		data = data[:len(data)/2]
	case cachetest.FlipByte:
		data[len(data)/2] ^= 0x40
	}
	if _, err := client.PutObject(t.Context(), &awss3.PutObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
}

// conformanceHeapLimit is the heap growth allowed while 256 MiB stream
// through Put and Get, above the suite's default of 32 MiB: the SDK's
// transfer manager allocates its (concurrency+1) part buffers afresh for
// every multipart upload (15 MiB with the defaults) and reads the first
// part with io.ReadAll (5 MiB, and as much again in garbage while it
// grows), and with about 20 MiB live the garbage collector lets the heap
// reach twice that before it runs. Measured peaks: 25 to 33 MiB, the same
// with one part in flight; memory stays bounded by the part size, not the
// blob size.
const conformanceHeapLimit = 40 << 20

func TestConformance(t *testing.T) {
	srv := testserver.StartS3(t)
	cachetest.Run(t, func(t *testing.T) cache.LayerCache { return newCache(t, srv) },
		cachetest.WithCorrupter(corrupt), cachetest.WithHeapLimit(conformanceHeapLimit))
}

// failReader fails the test if it is read.
type failReader struct{ t *testing.T }

func (r failReader) Read([]byte) (int, error) {
	r.t.Error("Put read the blob although it was stored")
	return 0, io.ErrUnexpectedEOF
}

func TestPutSkipsStoredBlob(t *testing.T) {
	srv := testserver.StartS3(t)
	c := newCache(t, srv)
	b := cachetest.NewBlob(20, 5000)
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{int64(len(b.Data)), -1} {
		if err := c.Put(t.Context(), b.Digest, size, failReader{t}); err != nil {
			t.Fatalf("Put(size %d) of a stored blob: %v", size, err)
		}
	}
	if s := c.Stats(); s.BytesIn != uint64(len(b.Data)) {
		t.Errorf("BytesIn = %d after one upload and two skipped Puts, want %d", s.BytesIn, len(b.Data))
	}
}

// TestPutReplacesWrongSize: an object of the wrong size at a blob's key is
// damaged (a blob's size follows from its digest); Put replaces it.
func TestPutReplacesWrongSize(t *testing.T) {
	srv := testserver.StartS3(t)
	c := newCache(t, srv)
	b := cachetest.NewBlob(21, 5000)
	if _, err := clientOf(t, c).PutObject(t.Context(), &awss3.PutObjectInput{
		Bucket: aws.String(c.Bucket()), Key: aws.String(c.BlobKey(b.Digest)), Body: bytes.NewReader(b.Data[:100]),
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("the damaged object was not replaced")
	}
	if s := c.Stats(); s.Corruptions != 1 {
		t.Errorf("Corruptions = %d, want 1", s.Corruptions)
	}
}

// TestWalk: pages are followed, and keys under the blobs prefix that are
// not digests, keys of other prefixes and BuildKit's manifests are not
// blobs.
func TestWalk(t *testing.T) {
	srv := testserver.StartS3(t)
	c := newCache(t, srv)
	s3cache.SetListPageSize(c, 3)
	want := map[v1.Hash]int64{}
	for i := range 10 {
		b := cachetest.NewBlob(uint64(30+i), 10*i)
		if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
			t.Fatal(err)
		}
		want[b.Digest] = int64(len(b.Data))
	}
	other := cachetest.NewBlob(99, 10).Digest
	for _, key := range []string{
		"ci/blobs/README",
		"ci/blobs/sha256:" + strings.ToUpper(other.Hex),
		"ci/blobs/sha256:" + other.Hex + "/x",
		"ci/blobs/sha512:" + other.Hex,
		"ci/manifests/buildkit",
		"other/blobs/" + other.String(),
		"ci/" + other.String(),
	} {
		if _, err := clientOf(t, c).PutObject(t.Context(), &awss3.PutObjectInput{
			Bucket: aws.String(c.Bucket()), Key: aws.String(key), Body: bytes.NewReader([]byte("x")),
		}); err != nil {
			t.Fatalf("PutObject %s: %v", key, err)
		}
	}
	got := map[v1.Hash]int64{}
	if err := c.Walk(t.Context(), func(d v1.Hash, size int64) error { got[d] = size; return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Walk (-want +got):\n%s", diff)
	}
}

// TestTouchRefresh: with WithTouchRefresh(d), a Get that verified and a
// Put of a stored blob copy an object older than d onto itself (new
// metadata, and on AWS a new LastModified); younger objects are left
// alone.
func TestTouchRefresh(t *testing.T) {
	srv := testserver.StartS3(t)
	bucket := srv.NewBucket(t)
	touched := func(t *testing.T, c *s3cache.Cache, d v1.Hash) bool {
		t.Helper()
		head, err := clientOf(t, c).HeadObject(t.Context(), &awss3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(c.BlobKey(d))})
		if err != nil {
			t.Fatal(err)
		}
		_, ok := head.Metadata["buildcache-touched"]
		return ok
	}
	fresh, err := s3cache.New(srv.Client(), bucket, "", s3cache.WithTouchRefresh(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	old, err := s3cache.New(srv.Client(), bucket, "", s3cache.WithTouchRefresh(time.Hour), s3cache.WithClock(later))
	if err != nil {
		t.Fatal(err)
	}

	a, b := cachetest.NewBlob(40, 1000), cachetest.NewBlob(41, 1000)
	for _, blob := range []cachetest.Blob{a, b} {
		if err := fresh.Put(t.Context(), blob.Digest, int64(len(blob.Data)), bytes.NewReader(blob.Data)); err != nil {
			t.Fatal(err)
		}
	}
	mustRead(t, fresh, a.Digest)
	if err := fresh.Put(t.Context(), b.Digest, int64(len(b.Data)), failReader{t}); err != nil {
		t.Fatal(err)
	}
	if touched(t, fresh, a.Digest) || touched(t, fresh, b.Digest) {
		t.Fatal("blobs younger than the refresh interval were touched")
	}

	// Two hours later both are older than the interval.
	rc, err := old.Get(t.Context(), a.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if touched(t, old, a.Digest) {
		t.Error("touched before the blob was read and verified")
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	if !touched(t, old, a.Digest) {
		t.Error("Get of an old blob did not refresh it")
	}
	if err := old.Put(t.Context(), b.Digest, int64(len(b.Data)), failReader{t}); err != nil {
		t.Fatal(err)
	}
	if !touched(t, old, b.Digest) {
		t.Error("Put of an old stored blob did not refresh it")
	}
	if got := mustRead(t, old, a.Digest); !bytes.Equal(got, a.Data) {
		t.Error("refreshing changed the blob")
	}
}

func TestAs(t *testing.T) {
	client := awss3.New(awss3.Options{Region: "us-east-1"})
	c, err := s3cache.New(client, "bucket", "")
	if err != nil {
		t.Fatal(err)
	}
	var got *awss3.Client
	if !c.As(&got) || got != client {
		t.Fatalf("As(**s3.Client) = %v, %p; want true, %p", c.As(&got), got, client)
	}
	var wrong *s3cache.Cache
	if c.As(&wrong) || c.As(got) {
		t.Fatal("As accepted a type it does not support")
	}
}

func TestNewRejects(t *testing.T) {
	client := awss3.New(awss3.Options{Region: "us-east-1"})
	for _, tc := range []struct {
		name   string
		client *awss3.Client
		bucket string
		opts   []s3cache.Option
		want   string
	}{
		{"nil client", nil, "b", nil, "nil client"},
		{"no bucket", client, "", nil, "empty bucket"},
		{"bucket with a slash", client, "a/b", nil, "invalid bucket"},
		{"part too small", client, "b", []s3cache.Option{s3cache.WithPartSize(1 << 20)}, "between 5 MiB and 5 GiB"},
		{"part too large", client, "b", []s3cache.Option{s3cache.WithPartSize(6 << 30)}, "between 5 MiB and 5 GiB"},
		{"no concurrency", client, "b", []s3cache.Option{s3cache.WithConcurrency(0)}, "at least 1"},
		{"negative refresh", client, "b", []s3cache.Option{s3cache.WithTouchRefresh(-time.Second)}, "negative"},
		{"nil clock", client, "b", []s3cache.Option{s3cache.WithClock(nil)}, "WithClock(nil)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s3cache.New(tc.client, tc.bucket, "", tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestEndpointInErrors(t *testing.T) {
	for _, tc := range []struct {
		opts awss3.Options
		want string
	}{
		{awss3.Options{Region: "eu-west-1", BaseEndpoint: aws.String("https://minio.example:9000")}, "https://minio.example:9000"},
		{awss3.Options{Region: "eu-west-1"}, "AWS S3 in eu-west-1"},
	} {
		c, err := s3cache.New(awss3.New(tc.opts), "b", "")
		if err != nil {
			t.Fatal(err)
		}
		if c.Endpoint() != tc.want {
			t.Errorf("Endpoint() = %q, want %q", c.Endpoint(), tc.want)
		}
	}
}

// TestGetClosedEarly: closing a Get before the end stops its read-ahead
// without waiting for the rest, and counts no corruption.
func TestGetClosedEarly(t *testing.T) {
	srv := testserver.StartS3(t)
	c := newCache(t, srv)
	b := cachetest.NewBlob(50, 3<<20)
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		rc, err := c.Get(t.Context(), b.Digest)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, 10)
		if _, err := io.ReadFull(rc, p); err != nil || !bytes.Equal(p, b.Data[:10]) {
			t.Fatalf("first bytes: %q, %v", p, err)
		}
		if err := rc.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if s := c.Stats(); s.Corruptions != 0 || s.Hits != 20 {
		t.Fatalf("Stats = %+v, want 20 hits and no corruption", s)
	}
	if got := mustRead(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("blob harmed")
	}
}
