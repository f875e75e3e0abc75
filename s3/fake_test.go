package s3_test

import (
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	s3cache "github.com/buildcache/buildcache/s3"
)

// TestConformanceGofakes3 runs the suite against gofakes3 in process: fast,
// and no server binary needed. TestConformance, against a real server, is
// the one that counts.
func TestConformanceGofakes3(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) cache.LayerCache {
		srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
		t.Cleanup(srv.Close)
		client := awss3.New(awss3.Options{
			Region:       "us-east-1",
			BaseEndpoint: aws.String(srv.URL),
			UsePathStyle: true,
			Credentials:  credentials.NewStaticCredentialsProvider("key", "secret", ""),
		})
		if _, err := client.CreateBucket(t.Context(), &awss3.CreateBucketInput{Bucket: aws.String("fake")}); err != nil {
			t.Fatal(err)
		}
		c, err := s3cache.New(client, "fake", "")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}, cachetest.WithCorrupter(corrupt), cachetest.WithoutLargeBlob("gofakes3 keeps objects in memory"))
}
