package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
)

// fleet is one bucket and the clocks of the processes sharing it: each
// Cache made by proc is a process of its own (its own claims, records'
// ETags and leases) on one manual clock, which also stands for the
// endpoint's clock.
type fleet struct {
	t      *testing.T
	srv    *testserver.S3Server
	bucket string
	clock  *testclock.Clock
}

// newFleet starts versitygw with a bucket. The manual clock starts at
// the real time, since the objects' LastModified is the server's: tests
// move objects back in time (age) or the clock forward.
func newFleet(t *testing.T) *fleet {
	srv := testserver.StartS3Server(t) // BUILDCACHE_S3_SERVER=minio: on MinIO, by hand
	return &fleet{t: t, srv: srv, bucket: srv.NewBucket(t), clock: testclock.New(time.Now().Truncate(time.Second))}
}

// proc returns a Cache on the fleet's bucket whose waits move the clock
// instead of waiting.
func (f *fleet) proc(opts ...s3cache.Option) *s3cache.Cache {
	f.t.Helper()
	opts = append([]s3cache.Option{s3cache.WithClock(f.clock.Now)}, opts...)
	c, err := s3cache.New(f.srv.Client(), f.bucket, "ci/", opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	s3cache.SetServerClock(c, f.clock.Now)
	s3cache.SetSleep(c, func(ctx context.Context, d time.Duration) error {
		f.clock.Advance(d)
		return ctx.Err()
	})
	return c
}

func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func put(t *testing.T, ctx context.Context, c cache.Putter, b []byte) v1.Hash {
	t.Helper()
	d := digestOf(b)
	if err := c.Put(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return d
}

// image puts a one-platform image manifest, its config and layers, and
// an index over it: the index's descriptor and every blob's digest.
func image(t *testing.T, c cache.Putter, tag string, layers ...[]byte) (v1.Descriptor, []v1.Hash) {
	t.Helper()
	ctx := t.Context()
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","tag":%q}`, tag))
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: put(t, ctx, c, cfg), Size: int64(len(cfg))}}
	all := []v1.Hash{m.Config.Digest}
	for _, l := range layers {
		d := put(t, ctx, c, l)
		all = append(all, d)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCILayer, Digest: d, Size: int64(len(l))})
	}
	mb, _ := json.Marshal(m)
	md := put(t, ctx, c, mb)
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{
		{MediaType: types.OCIManifestSchema1, Digest: md, Size: int64(len(mb)), Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}}}
	ib, _ := json.Marshal(idx)
	id := put(t, ctx, c, ib)
	all = append(all, md, id)
	return v1.Descriptor{MediaType: types.OCIImageIndex, Digest: id, Size: int64(len(ib))}, all
}

// withImage is a fleet, a process of it and an image it put in the
// bucket (its index's descriptor).
func withImage(t *testing.T) (*fleet, *s3cache.Cache, v1.Descriptor) {
	f := newFleet(t)
	c := f.proc()
	top, _ := image(t, c, "v1")
	return f, c, top
}

// root is desc recorded for name, checked at at.
func root(desc v1.Descriptor, name string, at time.Time) v1.Descriptor {
	desc.Annotations = map[string]string{
		cache.AnnotationRefName:    name,
		cache.AnnotationResolvedAt: at.UTC().Format(time.RFC3339Nano),
	}
	return desc
}

// age sets the LastModified of blob d in the bucket to at: versitygw's
// POSIX storage keeps it as the object file's mtime.
func (f *fleet) age(d v1.Hash, at time.Time) {
	f.t.Helper()
	if f.srv.Kind() != "versitygw" {
		f.t.Skipf("ages objects through versitygw's files; %s keeps them otherwise", f.srv.Kind())
	}
	p := filepath.Join(f.srv.Dir(), f.bucket, "ci", "blobs", d.String())
	if err := os.Chtimes(p, at, at); err != nil {
		f.t.Fatal(err)
	}
}

// exists reports whether key is in the bucket.
func (f *fleet) exists(key string) bool {
	f.t.Helper()
	_, err := f.srv.Client().HeadObject(context.Background(), &awss3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)})
	return err == nil
}

// keys lists the keys under prefix (after "ci/").
func (f *fleet) keys(prefix string) []string {
	f.t.Helper()
	out, err := f.srv.Client().ListObjectsV2(context.Background(), &awss3.ListObjectsV2Input{Bucket: aws.String(f.bucket), Prefix: aws.String("ci/" + prefix)})
	if err != nil {
		f.t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// putObject writes an object as another tool (BuildKit) would.
func (f *fleet) putObject(key string, body []byte) {
	f.t.Helper()
	if _, err := f.srv.Client().PutObject(context.Background(), &awss3.PutObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
		f.t.Fatal(err)
	}
}

// buildkitManifest is a BuildKit cache manifest listing blobs as its
// layers, as BuildKit's type=s3 exporter writes it.
func buildkitManifest(blobs ...v1.Hash) []byte {
	type layer struct {
		Blob string `json:"blob"`
	}
	var m struct {
		Layers  []layer `json:"layers"`
		Records []any   `json:"records"`
	}
	for _, d := range blobs {
		m.Layers = append(m.Layers, layer{d.String()})
	}
	m.Records = []any{map[string]any{"digest": "sha256:" + hex.EncodeToString(make([]byte, 32))}}
	b, _ := json.Marshal(m)
	return b
}

// gate runs fn once, from whichever goroutine gets there first.
type gate struct{ once sync.Once }

func (g *gate) do(fn func()) { g.once.Do(fn) }
