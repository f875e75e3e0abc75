package s3_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"

	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
)

// BuildKit's type=s3 cache (moby/buildkit, cache/remotecache/s3/s3.go,
// read at commit 0070379ba808007d6ac1052e0fa1cfde35a52bd0) names its
// objects with these lines, which the helpers below follow:
//
//	func (s3Client *s3Client) blobKey(dgst digest.Digest) string {
//		return s3Client.prefix + s3Client.blobsPrefix + dgst.String()
//	}
//	func (s3Client *s3Client) manifestKey(name string) string {
//		return s3Client.prefix + s3Client.manifestsPrefix + name
//	}
//
// with these defaults in getConfig:
//
//	prefix := attrs[attrPrefix]
//	manifestsPrefix = "manifests/"
//	blobsPrefix = "blobs/"
//	names := []string{"buildkit"}
//
// Its exporter uploads a layer to blobKey(desc.Digest) (saveMutableAt) and
// its importer reads the same key (ReaderAt -> getReader -> GetObject).

// buildkitAttrs are the attributes of --cache-to/--cache-from type=s3 that
// decide where objects go; "" means the attribute is not set.
type buildkitAttrs struct {
	prefix, blobsPrefix, manifestsPrefix string
}

func (a buildkitAttrs) blobKey(dgst digest.Digest) string {
	blobs := a.blobsPrefix
	if blobs == "" {
		blobs = "blobs/"
	}
	return a.prefix + blobs + dgst.String()
}

func (a buildkitAttrs) manifestKey(name string) string {
	manifests := a.manifestsPrefix
	if manifests == "" {
		manifests = "manifests/"
	}
	return a.prefix + manifests + name
}

// options are the s3cache options that mirror the attributes.
func (a buildkitAttrs) options() []s3cache.Option {
	var opts []s3cache.Option
	if a.blobsPrefix != "" {
		opts = append(opts, s3cache.WithBlobsPrefix(a.blobsPrefix))
	}
	if a.manifestsPrefix != "" {
		opts = append(opts, s3cache.WithManifestsPrefix(a.manifestsPrefix))
	}
	return opts
}

func getObject(t *testing.T, client *awss3.Client, bucket, key string) ([]byte, error) {
	t.Helper()
	out, err := client.GetObject(t.Context(), &awss3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

func TestBuildKitLayout(t *testing.T) {
	srv := testserver.StartS3(t)
	for _, tc := range []struct {
		name  string
		attrs buildkitAttrs
	}{
		{"defaults", buildkitAttrs{}},
		{"prefix", buildkitAttrs{prefix: "team-a/"}},
		{"all prefixes", buildkitAttrs{prefix: "ci/main/", blobsPrefix: "cache-blobs/", manifestsPrefix: "cache-manifests/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bucket := srv.NewBucket(t)
			client := srv.Client()
			c, err := s3cache.New(client, bucket, tc.attrs.prefix, tc.attrs.options()...)
			if err != nil {
				t.Fatal(err)
			}

			// Written by us, read where BuildKit's importer reads.
			ours := cachetest.NewBlob(1, 3000)
			dgst := digest.FromBytes(ours.Data) // BuildKit's digest type
			if dgst.String() != ours.Digest.String() {
				t.Fatalf("go-digest says %s, we say %s", dgst, ours.Digest)
			}
			if err := c.Put(t.Context(), ours.Digest, int64(len(ours.Data)), bytes.NewReader(ours.Data)); err != nil {
				t.Fatal(err)
			}
			key := tc.attrs.blobKey(dgst)
			if got := c.BlobKey(ours.Digest); got != key {
				t.Errorf("BlobKey = %q, BuildKit's key is %q", got, key)
			}
			got, err := getObject(t, client, bucket, key)
			if err != nil {
				t.Fatalf("BuildKit's key %q: %v", key, err)
			}
			if !bytes.Equal(got, ours.Data) {
				t.Fatalf("BuildKit's key %q holds other bytes", key)
			}

			// Written where BuildKit's exporter writes (a plain upload, as
			// its saveMutableAt does), read through us.
			theirs := cachetest.NewBlob(2, 7000)
			theirKey := tc.attrs.blobKey(digest.FromBytes(theirs.Data))
			if _, err := client.PutObject(t.Context(), &awss3.PutObjectInput{
				Bucket: aws.String(bucket), Key: aws.String(theirKey), Body: bytes.NewReader(theirs.Data),
			}); err != nil {
				t.Fatal(err)
			}
			if size, err := c.Stat(t.Context(), theirs.Digest); err != nil || size != int64(len(theirs.Data)) {
				t.Fatalf("Stat of BuildKit's blob = %d, %v", size, err)
			}
			rc, err := c.Get(t.Context(), theirs.Digest)
			if err != nil {
				t.Fatalf("Get of BuildKit's blob: %v", err)
			}
			got, err = io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, theirs.Data) {
				t.Fatalf("Get of BuildKit's blob: %d bytes, %v", len(got), err)
			}

			// BuildKit's cache manifest sits beside the blobs; Walk lists
			// blobs only.
			mkey := tc.attrs.manifestKey("buildkit")
			if got := c.ManifestKey("buildkit"); got != mkey {
				t.Errorf("ManifestKey = %q, BuildKit's is %q", got, mkey)
			}
			if _, err := client.PutObject(t.Context(), &awss3.PutObjectInput{
				Bucket: aws.String(bucket), Key: aws.String(mkey), Body: bytes.NewReader([]byte(`{"layers":[]}`)),
			}); err != nil {
				t.Fatal(err)
			}
			listed := map[v1.Hash]int64{}
			if err := c.Walk(t.Context(), func(d v1.Hash, size int64) error { listed[d] = size; return nil }); err != nil {
				t.Fatal(err)
			}
			want := map[v1.Hash]int64{ours.Digest: int64(len(ours.Data)), theirs.Digest: int64(len(theirs.Data))}
			if len(listed) != len(want) || listed[ours.Digest] != want[ours.Digest] || listed[theirs.Digest] != want[theirs.Digest] {
				t.Fatalf("Walk = %v, want %v", listed, want)
			}
		})
	}
}
