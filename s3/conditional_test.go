package s3_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestServerConditionalWrites checks what the fleet's records and claims
// rely on in the server the tests run on (versitygw; MinIO with
// BUILDCACHE_S3_SERVER=minio): a create with If-None-Match: * fails on
// an existing key, an update with If-Match fails on another ETag, racing
// conditional writes have one winner; it logs whether a delete with
// If-Match of another ETag deletes nothing. The package doc (# Fleet)
// says what a store without them costs.
func TestServerConditionalWrites(t *testing.T) {
	f := newFleet(t)
	c := f.srv.Client()
	ctx := context.Background()
	b := f.bucket
	put := func(key, body string, ifNoneMatch, ifMatch *string) (*awss3.PutObjectOutput, error) {
		return c.PutObject(ctx, &awss3.PutObjectInput{Bucket: &b, Key: &key, Body: strings.NewReader(body), IfNoneMatch: ifNoneMatch, IfMatch: ifMatch})
	}
	first, err := put("k", "one", aws.String("*"), nil)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := put("k", "two", aws.String("*"), nil); err == nil {
		t.Error("If-None-Match: * over an existing key succeeded")
	}
	if _, err := put("k", "three", nil, aws.String(`"0123456789abcdef0123456789abcdef"`)); err == nil {
		t.Error("If-Match with another ETag succeeded")
	}
	if _, err := put("k", "four", nil, first.ETag); err != nil {
		t.Errorf("If-Match with the ETag: %v", err)
	}
	// Conditional deletes are a convenience (a record refreshed, or a
	// lease renewed, while it is pruned survives), not what safety rests
	// on: MinIO ignores If-Match on DELETE. Say which this server does.
	_, derr := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &b, Key: aws.String("k"), IfMatch: first.ETag})
	_, herr := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b, Key: aws.String("k")})
	t.Logf("%s: DeleteObject with If-Match of an old ETag: error %v; object kept: %v", f.srv.Kind(), derr, herr == nil)
	for round := range 3 {
		key := fmt.Sprintf("race-%d", round)
		var creates, updates atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				if _, err := put(key, fmt.Sprint(i), aws.String("*"), nil); err == nil {
					creates.Add(1)
				}
			})
		}
		wg.Wait()
		h, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b, Key: &key})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 16 {
			wg.Go(func() {
				if _, err := put(key, fmt.Sprint("u", i), nil, h.ETag); err == nil {
					updates.Add(1)
				}
			})
		}
		wg.Wait()
		if creates.Load() != 1 || updates.Load() != 1 {
			t.Errorf("%s, round %d: %d of 16 racing creates and %d of 16 racing updates won, want 1 each", f.srv.Kind(), round, creates.Load(), updates.Load())
		}
	}
}
