package s3_test

import (
	"context"
	"testing"
	"time"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	s3cache "github.com/buildcache/buildcache/s3"
)

// withoutConditions makes a client drop If-Match and If-None-Match from
// every request before it is signed: what a store that ignores
// conditional writes does with them.
func withoutConditions(o *awss3.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		return stack.Build.Add(middleware.BuildMiddlewareFunc("dropConditions",
			func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
				if req, ok := in.Request.(*smithyhttp.Request); ok {
					req.Header.Del("If-Match")
					req.Header.Del("If-None-Match")
				}
				return next.HandleBuild(ctx, in)
			}), middleware.After)
	})
}

// TestStoreWithoutConditionalWrites: on a store that ignores conditional
// writes, records still work (the last writer wins), claims are not
// exclusive (each process revalidates for itself, as without a fleet),
// and the collector still keeps leased and reachable blobs: its safety
// needs no conditional write.
func TestStoreWithoutConditionalWrites(t *testing.T) {
	f := newFleet(t)
	proc := func() *s3cache.Cache {
		c, err := s3cache.New(f.srv.Client(withoutConditions), f.bucket, "ci/", s3cache.WithClock(f.clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		s3cache.SetServerClock(c, f.clock.Now)
		return c
	}
	a, b := proc(), proc()
	ctx := t.Context()
	top, blobs := image(t, a, "v1", []byte("layer"))
	const name = "r.example/app:v1"
	if err := a.RecordRoot(ctx, root(top, name, f.clock.Now())); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := b.Root(ctx, name); err != nil || !ok || got.Digest != top.Digest {
		t.Fatalf("Root = %v, %v, %v", got.Digest, ok, err)
	}
	// Claims in turn still see each other: b finds a's claim.
	f.clock.Advance(time.Hour)
	if cl, _, err := a.ClaimRevalidation(ctx, name, time.Minute); err != nil || !cl.Claimed {
		t.Fatalf("claim: %+v, %v", cl, err)
	}
	if cl, _, err := b.ClaimRevalidation(ctx, name, time.Minute); err != nil || !cl.Busy {
		t.Fatalf("claim after another's: %+v, %v; want busy", cl, err)
	}
	// But a write from a stale read is not refused: the last writer
	// wins, and a newer check can be lost (costing one more request
	// later); with conditional writes b's write would read again and
	// keep a's.
	if _, _, err := b.Root(ctx, name); err != nil { // b's read
		t.Fatal(err)
	}
	newer := f.clock.Now()
	if err := a.RecordRoot(ctx, root(top, name, newer)); err != nil {
		t.Fatal(err)
	}
	if err := b.RecordRoot(ctx, root(top, name, newer.Add(-time.Minute))); err != nil {
		t.Fatal(err)
	}
	got, _, _ := a.Root(ctx, name)
	t.Logf("after a stale write: the record says checked at %s (a checked at %s)", got.Annotations["dev.buildcache.resolved-at"], newer.UTC().Format(time.RFC3339Nano))

	for _, d := range blobs {
		f.age(d, f.clock.Now().Add(-2*time.Hour))
	}
	garbage := put(t, ctx, a, []byte("garbage"))
	f.age(garbage, f.clock.Now().Add(-2*time.Hour))
	rep, err := b.GC(ctx, s3cache.GCMaxBytes(0))
	if err != nil || rep.Removed != 1 || rep.Reachable != len(blobs) {
		t.Fatalf("GC without conditional writes: %+v, %v", rep, err)
	}
}
