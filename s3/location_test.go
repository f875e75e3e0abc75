package s3_test

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	s3cache "github.com/buildcache/buildcache/s3"
)

func TestLocation(t *testing.T) {
	client := awss3.New(awss3.Options{Region: "eu-west-1", BaseEndpoint: aws.String("http://127.0.0.1:9000"), UsePathStyle: true})
	c, err := s3cache.New(client, "ci-cache", "team/", s3cache.WithBlobsPrefix("b/"), s3cache.WithManifestsPrefix("m/"))
	if err != nil {
		t.Fatal(err)
	}
	want := s3cache.Location{
		Bucket: "ci-cache", Prefix: "team/", BlobsPrefix: "b/", ManifestsPrefix: "m/",
		Region: "eu-west-1", Endpoint: "http://127.0.0.1:9000", PathStyle: true,
	}
	l := c.Location()
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("Location (-want +got):\n%s", diff)
	}
	// The keys are the location's parts joined, as BuildKit joins them.
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	if got := l.Prefix + l.BlobsPrefix + d.String(); got != c.BlobKey(d) {
		t.Errorf("joined blob key %q, BlobKey %q", got, c.BlobKey(d))
	}
	if got := l.Prefix + l.ManifestsPrefix + "x"; got != c.ManifestKey("x") {
		t.Errorf("joined manifest key %q, ManifestKey %q", got, c.ManifestKey("x"))
	}

	// AWS: no endpoint, the defaults under the prefix.
	c, err = s3cache.New(awss3.New(awss3.Options{}), "b", "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s3cache.Location{Bucket: "b", BlobsPrefix: "blobs/", ManifestsPrefix: "manifests/"}, c.Location()); diff != "" {
		t.Errorf("Location on AWS (-want +got):\n%s", diff)
	}
}
