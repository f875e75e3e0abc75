package s3_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	s3cache "github.com/buildcache/buildcache/s3"
)

func Example() {
	ctx := context.Background()

	// An in-process fake S3 for this example; use any S3 endpoint (AWS,
	// MinIO, Ceph RGW, versitygw) the same way.
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	defer srv.Close()
	client := awss3.New(awss3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider("key", "secret", ""),
	})
	if _, err := client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("ci-cache")}); err != nil {
		log.Fatal(err)
	}

	c, err := s3cache.New(client, "ci-cache", "myapp/")
	if err != nil {
		log.Fatal(err)
	}
	blob := []byte("a layer")
	d, size, err := v1.SHA256(bytes.NewReader(blob))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Put(ctx, d, size, bytes.NewReader(blob)); err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.BlobKey(d)) // where BuildKit's type=s3 cache with prefix=myapp/ looks too

	rc, err := c.Get(ctx, d)
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", got)
	s := c.Stats()
	fmt.Printf("hits %d, bytes in %d, out %d\n", s.Hits, s.BytesIn, s.BytesOut)
	// Output:
	// myapp/blobs/sha256:e28d98ac666afd34f089b971a663264d54d67a60ddc82996d48d8f3c204eb75f
	// a layer
	// hits 1, bytes in 7, out 7
}
