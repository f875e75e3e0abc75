package s3_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
)

// benchBlobSize is the blob size of BenchmarkPut and BenchmarkGet.
const benchBlobSize = 64 << 20

func benchBlob() []byte {
	data := make([]byte, benchBlobSize)
	rand.NewChaCha8([32]byte{2}).Read(data)
	return data
}

// BenchmarkPut compares a verified Put (hashing, SHA-256 checksums the
// server checks, conditional multipart upload) with what the SDK does
// for a plain PutObject of the same bytes from memory (its defaults:
// a CRC32 checksum and a signed payload hash). Both run against one
// versitygw server; compare the two throughputs.
func BenchmarkPut(b *testing.B) {
	srv := testserver.StartS3(b)
	data := benchBlob()
	d := cachetest.Digest(data)
	ctx := context.Background()
	c, err := s3cache.New(srv.Client(), srv.NewBucket(b), "")
	if err != nil {
		b.Fatal(err)
	}
	client := srv.Client()

	b.Run("buildcache", func(b *testing.B) {
		b.SetBytes(benchBlobSize)
		for i := 0; i < b.N; i++ {
			if err := c.Put(ctx, d, benchBlobSize, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := c.Delete(ctx, d); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("sdk-putobject", func(b *testing.B) {
		b.SetBytes(benchBlobSize)
		in := &awss3.PutObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String("plain")}
		for i := 0; i < b.N; i++ {
			in.Body = bytes.NewReader(data)
			if _, err := client.PutObject(ctx, in); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if _, err := client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: in.Bucket, Key: in.Key}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

// BenchmarkGet compares a verified Get with a plain GetObject of the same
// object, read to the end: with io.Copy into io.Discard as a caller
// would (8 KiB reads), and with 256 KiB reads, which is what Get's own
// WriteTo and read-ahead use.
func BenchmarkGet(b *testing.B) {
	srv := testserver.StartS3(b)
	data := benchBlob()
	d := cachetest.Digest(data)
	ctx := context.Background()
	c, err := s3cache.New(srv.Client(), srv.NewBucket(b), "")
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Put(ctx, d, benchBlobSize, bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	client := srv.Client()

	b.Run("buildcache", func(b *testing.B) {
		b.SetBytes(benchBlobSize)
		for b.Loop() {
			rc, err := c.Get(ctx, d)
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, rc); err != nil || n != benchBlobSize {
				b.Fatalf("read %d bytes, %v", n, err)
			}
			rc.Close()
		}
	})
	b.Run("sdk-getobject", func(b *testing.B) {
		b.SetBytes(benchBlobSize)
		in := &awss3.GetObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String(c.BlobKey(d))}
		for b.Loop() {
			out, err := client.GetObject(ctx, in)
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, out.Body); err != nil || n != benchBlobSize {
				b.Fatalf("read %d bytes, %v", n, err)
			}
			out.Body.Close()
		}
	})
	b.Run("sdk-getobject-256k", func(b *testing.B) {
		b.SetBytes(benchBlobSize)
		in := &awss3.GetObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String(c.BlobKey(d))}
		buf := make([]byte, 256<<10)
		for b.Loop() {
			out, err := client.GetObject(ctx, in)
			if err != nil {
				b.Fatal(err)
			}
			// onlyWriter hides io.Discard's ReadFrom, so CopyBuffer uses buf.
			if n, err := io.CopyBuffer(onlyWriter{io.Discard}, out.Body, buf); err != nil || n != benchBlobSize {
				b.Fatalf("read %d bytes, %v", n, err)
			}
			out.Body.Close()
		}
	})
}

type onlyWriter struct{ io.Writer }
