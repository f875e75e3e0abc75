package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
)

// bigBlob returns n random bytes, more than one part, quickly.
func bigBlob(seed byte, n int) cachetest.Blob {
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(data)
	return cachetest.Blob{Data: data, Digest: cachetest.Digest(data)}
}

// pendingUploads counts the multipart uploads the server holds for bucket.
func pendingUploads(t *testing.T, client *awss3.Client, bucket string) int {
	t.Helper()
	out, err := client.ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	return len(out.Uploads)
}

// expectNothingStored checks through the cache and around it that no
// object of d is visible.
func expectNothingStored(t *testing.T, c *s3cache.Cache, d v1.Hash) {
	t.Helper()
	if _, err := c.Stat(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Stat = %v, want ErrNotFound", err)
	}
	if rc, err := c.Get(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get = %v, want ErrNotFound", err)
	}
	n := 0
	if err := c.Walk(t.Context(), func(v1.Hash, int64) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("Walk listed %d blobs, err %v; want none", n, err)
	}
	out, err := clientOf(t, c).ListObjectsV2(t.Context(), &awss3.ListObjectsV2Input{Bucket: aws.String(c.Bucket())})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out.Contents {
		t.Errorf("object %s (%d bytes) is visible in the bucket", aws.ToString(o.Key), aws.ToInt64(o.Size))
	}
}

// hookReader calls hook once, when at bytes have been read.
type hookReader struct {
	r    io.Reader
	at   int64
	n    int64
	hook func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	if h.hook != nil && h.n >= h.at {
		h.hook()
		h.hook = nil
	}
	n, err := h.r.Read(p)
	h.n += int64(n)
	return n, err
}

// TestServerKilledDuringMultipartUpload kills the server (SIGKILL) while a
// multipart Put is half-way: the Put fails with an error naming the
// endpoint, and after a restart no part of the blob is visible; the
// orphaned upload is swept, and the blob can be stored again.
func TestServerKilledDuringMultipartUpload(t *testing.T) {
	srv := testserver.StartS3(t)
	c := newCache(t, srv)
	b := bigBlob(1, 4*s3cache.DefaultPartSize+12345)

	r := &hookReader{r: bytes.NewReader(b.Data), at: int64(len(b.Data) / 2), hook: srv.Stop}
	err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), r)
	if err == nil {
		t.Fatal("Put succeeded although the server was killed half-way")
	}
	t.Logf("Put: %v", err)
	if !strings.Contains(err.Error(), srv.Endpoint) || !errors.Is(err, cache.ErrOffline) {
		t.Errorf("Put error %q does not name the endpoint %s as unreachable (ErrOffline)", err, srv.Endpoint)
	}

	srv.Start(t)
	expectNothingStored(t, c, b.Digest)
	pending := pendingUploads(t, clientOf(t, c), c.Bucket())
	t.Logf("%d multipart upload(s) pending after the restart", pending)
	n, err := c.SweepUploads(t.Context(), 0)
	if err != nil || n != pending {
		t.Fatalf("SweepUploads = %d, %v; want %d aborted", n, err, pending)
	}
	if p := pendingUploads(t, clientOf(t, c), c.Bucket()); p != 0 {
		t.Fatalf("%d uploads pending after SweepUploads", p)
	}
	expectNothingStored(t, c, b.Digest)

	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatalf("Put after the restart: %v", err)
	}
	if got := mustRead(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("Get after the restart returned other bytes")
	}
}

func mustRead(t *testing.T, c cache.LayerCache, d v1.Hash) []byte {
	t.Helper()
	rc, err := c.Get(t.Context(), d)
	if err != nil {
		t.Fatalf("Get(%s): %v", d, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", d, err)
	}
	return got
}

// opErrors runs every operation of c on d once and returns their errors
// by name.
func opErrors(ctx context.Context, c *s3cache.Cache, d v1.Hash, data []byte) map[string]error {
	errs := map[string]error{}
	_, errs["Stat"] = c.Stat(ctx, d)
	rc, err := c.Get(ctx, d)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	errs["Get"] = err
	errs["Put"] = c.Put(ctx, d, int64(len(data)), bytes.NewReader(data))
	errs["Delete"] = c.Delete(ctx, d)
	errs["Walk"] = c.Walk(ctx, func(v1.Hash, int64) error { return nil })
	errs["Check"] = c.Check(ctx)
	return errs
}

// TestServerDown: every operation on a stopped server fails with an error
// that names the endpoint and the bucket and is ErrOffline, never
// ErrNotFound; after a restart the same Cache works again.
func TestServerDown(t *testing.T) {
	srv := testserver.StartS3(t)
	c := newCache(t, srv)
	b := cachetest.NewBlob(3, 1000)
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	errs := opErrors(t.Context(), c, b.Digest, b.Data)
	for op, err := range errs {
		switch {
		case err == nil:
			t.Errorf("%s with the server down succeeded", op)
		case errors.Is(err, cache.ErrNotFound):
			t.Errorf("%s with the server down = %v, a miss instead of a failure", op, err)
		case !errors.Is(err, cache.ErrOffline) || !strings.Contains(err.Error(), srv.Endpoint) || !strings.Contains(err.Error(), c.Bucket()):
			t.Errorf("%s with the server down = %q; want ErrOffline naming %s and bucket %s", op, err, srv.Endpoint, c.Bucket())
		}
	}
	t.Logf("for example, Stat: %v", errs["Stat"])
	srv.Start(t)
	if got := mustRead(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("after a restart Get returned other bytes")
	}
}

// TestWrongCredentials: a wrong secret or an unknown access key gives
// every operation an error that says access was denied, names bucket and
// endpoint, is not a miss, and holds no secret.
func TestWrongCredentials(t *testing.T) {
	srv := testserver.StartS3(t)
	good := newCache(t, srv)
	b := cachetest.NewBlob(4, 1000)
	if err := good.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	const wrongSecret = "wrong-secret-must-not-leak"
	for name, creds := range map[string][2]string{
		"wrong secret":       {srv.AccessKey, wrongSecret},
		"unknown access key": {"AKIDNOBODYKNOWS", wrongSecret},
	} {
		t.Run(name, func(t *testing.T) {
			client := srv.Client(func(o *awss3.Options) {
				o.Credentials = credentials.NewStaticCredentialsProvider(creds[0], creds[1], "")
			})
			c, err := s3cache.New(client, good.Bucket(), "ci/")
			if err != nil {
				t.Fatal(err)
			}
			for op, err := range opErrors(t.Context(), c, b.Digest, b.Data) {
				if err == nil {
					t.Errorf("%s with %s succeeded", op, name)
					continue
				}
				msg := err.Error()
				if errors.Is(err, cache.ErrNotFound) {
					t.Errorf("%s = %v: a miss instead of a failure", op, err)
				}
				for _, want := range []string{"denied", `"` + c.Bucket() + `"`, srv.Endpoint} {
					if !strings.Contains(msg, want) {
						t.Errorf("%s error %q does not say %q", op, msg, want)
					}
				}
				for _, secret := range []string{wrongSecret, srv.SecretKey} {
					if strings.Contains(msg, secret) {
						t.Errorf("%s error contains a secret: %q", op, msg)
					}
				}
			}
			t.Logf("for example: %v", c.Check(t.Context()))
		})
	}
	if got := mustRead(t, good, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("the blob was harmed")
	}
}

// TestMissingBucket: a bucket that does not exist is an error saying so
// (ErrNoSuchBucket), for every operation, and never a miss: a HeadObject's 404 is the same
// for a missing key and a missing bucket, and Stat must tell them apart.
func TestMissingBucket(t *testing.T) {
	srv := testserver.StartS3(t)
	c, err := s3cache.New(srv.Client(), "no-such-bucket", "")
	if err != nil {
		t.Fatal(err)
	}
	b := cachetest.NewBlob(5, 1000)
	for op, err := range opErrors(t.Context(), c, b.Digest, b.Data) {
		if err == nil || errors.Is(err, cache.ErrNotFound) || !errors.Is(err, s3cache.ErrNoSuchBucket) {
			t.Errorf("%s on a missing bucket = %v, want ErrNoSuchBucket, not ErrNotFound", op, err)
			continue
		}
		for _, want := range []string{`bucket "no-such-bucket" does not exist`, srv.Endpoint} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s error %q does not say %q", op, err, want)
			}
		}
	}
	t.Logf("for example: %v", c.Check(t.Context()))
}

// TestObjectOverwritten: an object replaced behind the cache's back by
// other bytes of the same size is not served: the read fails with
// ErrCorrupt, the object is deleted, and Stats counts it.
func TestObjectOverwritten(t *testing.T) {
	srv := testserver.StartS3(t)
	c := newCache(t, srv)
	for _, n := range []int{300000, 2*s3cache.DefaultPartSize + 1} { // one PutObject; multipart
		b := bigBlob(byte(n), n)
		if err := c.Put(t.Context(), b.Digest, int64(n), bytes.NewReader(b.Data)); err != nil {
			t.Fatal(err)
		}
		other := bigBlob(byte(n)+1, n)
		if _, err := clientOf(t, c).PutObject(t.Context(), &awss3.PutObjectInput{
			Bucket: aws.String(c.Bucket()), Key: aws.String(c.BlobKey(b.Digest)), Body: bytes.NewReader(other.Data),
		}); err != nil {
			t.Fatal(err)
		}
		before := c.Stats().Corruptions
		rc, err := c.Get(t.Context(), b.Digest)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if !errors.Is(err, cache.ErrCorrupt) {
			t.Fatalf("reading an overwritten object = %v, want ErrCorrupt", err)
		}
		t.Logf("Get: %v", err)
		if got := c.Stats().Corruptions; got != before+1 {
			t.Errorf("Stats().Corruptions %d -> %d, want one more", before, got)
		}
		expectNothingStored(t, c, b.Digest)
	}
}

// otherRunner makes a client whose first request of operation op is
// preceded by another runner storing data at key: the race a conditional
// create exists for.
func otherRunner(t *testing.T, srv *testserver.S3Server, bucket, key, op string, data []byte) *awss3.Client {
	var fired atomic.Bool
	return srv.Client(func(o *awss3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Initialize.Add(middleware.InitializeMiddlewareFunc("otherRunner",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if awsmiddleware.GetOperationName(ctx) == op && fired.CompareAndSwap(false, true) {
						if _, err := srv.Client().PutObject(ctx, &awss3.PutObjectInput{
							Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data),
						}); err != nil {
							t.Errorf("the other runner's PutObject: %v", err)
						}
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.Before)
		})
	})
}

// TestConditionalCreate: when another runner stores the blob between our
// HeadObject and our upload, the conditional create (If-None-Match: *)
// fails with 412 and Put succeeds without overwriting; no multipart upload
// is left behind. If what the other runner stored has the wrong size, Put
// reports ErrCorrupt and removes it.
func TestConditionalCreate(t *testing.T) {
	srv := testserver.StartS3(t)
	for _, tc := range []struct {
		name string
		size int
		op   string // the request before which the other runner writes
	}{
		{"PutObject", 100000, "PutObject"},
		{"multipart", 2*s3cache.DefaultPartSize + 7, "CompleteMultipartUpload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bigBlob(7, tc.size)
			for _, wrongSize := range []bool{false, true} {
				bucket := srv.NewBucket(t)
				theirs := b.Data
				if wrongSize {
					theirs = b.Data[:len(b.Data)-1]
				}
				probe, _ := s3cache.New(srv.Client(), bucket, "")
				key := probe.BlobKey(b.Digest)
				c, err := s3cache.New(otherRunner(t, srv, bucket, key, tc.op, theirs), bucket, "")
				if err != nil {
					t.Fatal(err)
				}
				err = c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data))
				if p := pendingUploads(t, srv.Client(), bucket); p != 0 {
					t.Errorf("%d multipart uploads left behind", p)
				}
				if wrongSize {
					if !errors.Is(err, cache.ErrCorrupt) {
						t.Fatalf("Put that lost to a wrong-size object = %v, want ErrCorrupt", err)
					}
					expectNothingStored(t, c, b.Digest)
					continue
				}
				if err != nil {
					t.Fatalf("Put that lost the race to the same blob = %v, want success", err)
				}
				if got := mustRead(t, c, b.Digest); !bytes.Equal(got, b.Data) {
					t.Fatal("wrong bytes after the race")
				}
				if s := c.Stats(); s.BytesIn != 0 {
					t.Errorf("Stats().BytesIn = %d; the other runner stored the blob, not we", s.BytesIn)
				}
			}
		})
	}
}

// TestMultipartFailuresLeaveNothing: a multipart Put whose bytes do not
// match, or whose context is cancelled half-way, aborts its upload: no
// object, no pending upload.
func TestMultipartFailuresLeaveNothing(t *testing.T) {
	srv := testserver.StartS3(t)
	b := bigBlob(8, 3*s3cache.DefaultPartSize+99)

	t.Run("mismatch", func(t *testing.T) {
		c := newCache(t, srv)
		bad := bytes.Clone(b.Data)
		bad[len(bad)-1] ^= 1 // only the last byte differs: every part but the last is uploaded
		err := c.Put(t.Context(), b.Digest, int64(len(bad)), bytes.NewReader(bad))
		if !errors.Is(err, cache.ErrDigestMismatch) {
			t.Fatalf("Put of wrong bytes = %v, want ErrDigestMismatch", err)
		}
		expectNothingStored(t, c, b.Digest)
		if p := pendingUploads(t, clientOf(t, c), c.Bucket()); p != 0 {
			t.Errorf("%d multipart uploads left behind", p)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		c := newCache(t, srv)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		r := &hookReader{r: bytes.NewReader(b.Data), at: int64(len(b.Data) / 2), hook: cancel}
		err := c.Put(ctx, b.Digest, int64(len(b.Data)), r)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Put = %v, want context.Canceled", err)
		}
		expectNothingStored(t, c, b.Digest)
		if p := pendingUploads(t, clientOf(t, c), c.Bucket()); p != 0 {
			t.Errorf("%d multipart uploads left behind", p)
		}
	})
}
