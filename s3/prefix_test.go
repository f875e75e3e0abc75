package s3_test

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	s3cache "github.com/buildcache/buildcache/s3"
)

// TestNewRejectsPrefixes: a prefix that could climb out of where it
// says, or that S3 tools and BuildKit would read differently, is refused
// with an error naming it.
func TestNewRejectsPrefixes(t *testing.T) {
	client := awss3.New(awss3.Options{Region: "us-east-1"})
	for _, tc := range []struct {
		name   string
		prefix string
		opts   []s3cache.Option
		want   string
	}{
		{"dot-dot", "../x/", nil, `"../x/"`},
		{"dot-dot inside", "a/../x/", nil, `".."`},
		{"dot-dot at the end", "a/..", nil, `".."`},
		{"dot", "./x/", nil, `"."`},
		{"leading slash", "/x/", nil, `"/x/"`},
		{"backslash", `a\b/`, nil, "backslash"},
		{"control character", "a\nb/", nil, "control character"},
		{"DEL", "a\x7fb/", nil, "control character"},
		{"not UTF-8", "a\xffb/", nil, "UTF-8"},
		{"blobs dot-dot", "ci/", []s3cache.Option{s3cache.WithBlobsPrefix("../blobs/")}, `WithBlobsPrefix("../blobs/")`},
		{"blobs backslash", "ci/", []s3cache.Option{s3cache.WithBlobsPrefix(`b\`)}, "backslash"},
		{"manifests dot-dot", "ci/", []s3cache.Option{s3cache.WithManifestsPrefix("m/../../")}, `WithManifestsPrefix("m/../../")`},
		{"manifests control", "ci/", []s3cache.Option{s3cache.WithManifestsPrefix("m\x00/")}, "control character"},
		{"blobs leading slash, no prefix", "", []s3cache.Option{s3cache.WithBlobsPrefix("/blobs/")}, `"/blobs/"`},
		{"manifests leading slash, no prefix", "", []s3cache.Option{s3cache.WithManifestsPrefix("/m/")}, `"/m/"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s3cache.New(client, "b", tc.prefix, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%q) = %v, want an error saying %q", tc.prefix, err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		prefix string
		opts   []s3cache.Option
	}{
		{"", nil},
		{"ci/", nil},
		{"team/app", nil},
		{"a..b/.x/x./", nil},
		{"p", []s3cache.Option{s3cache.WithBlobsPrefix(""), s3cache.WithManifestsPrefix("")}},
		{"ci", []s3cache.Option{s3cache.WithBlobsPrefix("/blobs/")}}, // "ci/blobs/", as BuildKit concatenates
		{"ünï/", nil},
	} {
		if _, err := s3cache.New(client, "b", tc.prefix, tc.opts...); err != nil {
			t.Errorf("New(%q): %v", tc.prefix, err)
		}
	}
}

// TestNewRejectsEndpointCredentials: a client whose endpoint carries
// userinfo is refused, and the error does not repeat the password (it
// would otherwise be in every error naming the endpoint).
func TestNewRejectsEndpointCredentials(t *testing.T) {
	for _, e := range []string{"http://KEY:SECRET@127.0.0.1:9000", "https://SECRET@minio.example", "http://KEY:SECRET@127.0.0.1:9000/%zz"} {
		client := awss3.New(awss3.Options{Region: "us-east-1", BaseEndpoint: aws.String(e)})
		c, err := s3cache.New(client, "b", "")
		if err == nil {
			t.Errorf("New with endpoint %q succeeded (Endpoint() = %q)", e, c.Endpoint())
			continue
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("New with endpoint %q: error repeats the secret: %v", e, err)
		}
	}
}
