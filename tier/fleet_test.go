package tier_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// bucketFleet is one bucket (versitygw) that tiers with near tiers of
// their own share.
type bucketFleet struct {
	t      *testing.T
	srv    *testserver.S3Server
	bucket string
}

func newBucketFleet(t *testing.T) *bucketFleet {
	srv := testserver.StartS3(t)
	return &bucketFleet{t: t, srv: srv, bucket: srv.NewBucket(t)}
}

func (f *bucketFleet) far() *s3cache.Cache {
	c, err := s3cache.New(f.srv.Client(), f.bucket, "ci/")
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *bucketFleet) tier() *tier.Cache {
	c, err := tier.New(disk(f.t), f.far())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

func putBytes(t *testing.T, c cache.Putter, b []byte) v1.Descriptor {
	t.Helper()
	sum := sha256.Sum256(b)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if err := c.Put(t.Context(), d, int64(len(b)), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{Digest: d, Size: int64(len(b))}
}

// storeImage puts a one-layer image manifest and an index over it into
// c: the index's root descriptor for name, and every blob.
func storeImage(t *testing.T, c cache.Putter, name, layer string) (v1.Descriptor, []v1.Hash) {
	t.Helper()
	cfg := putBytes(t, c, []byte(`{"architecture":"amd64","os":"linux"}`))
	cfg.MediaType = types.OCIConfigJSON
	l := putBytes(t, c, []byte(layer))
	l.MediaType = types.OCILayer
	mb, _ := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: cfg, Layers: []v1.Descriptor{l}})
	m := putBytes(t, c, mb)
	m.MediaType = types.OCIManifestSchema1
	ib, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{m}})
	top := putBytes(t, c, ib)
	top.MediaType = types.OCIImageIndex
	top.Annotations = map[string]string{
		cache.AnnotationRefName:    name,
		cache.AnnotationResolvedAt: time.Now().UTC().Format(time.RFC3339Nano),
	}
	return top, []v1.Hash{cfg.Digest, l.Digest, m.Digest, top.Digest}
}

// TestTierRecordsInTheFarTier: a root recorded through one tier is found
// by a tier with an empty near tier (one far lookup), which keeps it in
// its near tier for the next lookup.
func TestTierRecordsInTheFarTier(t *testing.T) {
	f := newBucketFleet(t)
	a, b := f.tier(), f.tier()
	ctx := t.Context()
	top, _ := storeImage(t, a, "r.example/app:v1", "layer")
	if err := a.RecordRoot(ctx, top); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.Root(ctx, "r.example/app:v1")
	if err != nil || !ok || got.Digest != top.Digest {
		t.Fatalf("fresh tier's Root = %v, %v, %v", got.Digest, ok, err)
	}
	if n := b.FleetStats().FarRecordHits; n != 1 {
		t.Fatalf("FarRecordHits = %d", n)
	}
	if _, ok, _ := b.Root(ctx, "r.example/app:v1"); !ok || b.FleetStats().FarRecordHits != 1 {
		t.Fatal("the second lookup went to the far tier again")
	}
	// The near tier drops the root: it goes from the bucket too, so the
	// next lookup does not find it again.
	if err := a.UpdateIndex(ctx, func(im *v1.IndexManifest) error { im.Manifests = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.far().Root(ctx, "r.example/app:v1"); ok {
		t.Fatal("a root the tier removed is still in the bucket")
	}
}

// TestTierBackfillsTheFarTier: an image the near tier holds but the far
// tier does not (its far writes were skipped while the bucket was down)
// is copied to the bucket before its root is recorded there.
func TestTierBackfillsTheFarTier(t *testing.T) {
	f := newBucketFleet(t)
	c := f.tier()
	ctx := t.Context()
	top, blobs := storeImage(t, c.Near(), "r.example/app:v1", "near only")
	if err := c.RecordRoot(ctx, top); err != nil {
		t.Fatal(err)
	}
	far := f.far()
	for _, d := range blobs {
		if _, err := far.Stat(ctx, d); err != nil {
			t.Errorf("blob %s not copied to the far tier: %v", d, err)
		}
	}
	if _, ok, err := far.Root(ctx, "r.example/app:v1"); !ok || err != nil {
		t.Fatalf("far record: %v, %v", ok, err)
	}
	if n := c.FleetStats().Backfilled; n != uint64(len(blobs)) {
		t.Fatalf("Backfilled = %d, want %d", n, len(blobs))
	}
}

// TestTierLeasesTheFarTier: a pull through a tier leases in the bucket
// too: a blob it looked at there is kept by another process's collector
// of the bucket until the lease ends.
func TestTierLeasesTheFarTier(t *testing.T) {
	f := newBucketFleet(t)
	c := f.tier()
	ctx := t.Context()
	inFar := putBytes(t, f.far(), []byte("only in the bucket")).Digest
	leased, release, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(leased, inFar); err != nil {
		t.Fatal(err)
	}
	collector := f.far()
	rep, err := collector.GC(ctx, s3cache.GCMaxBytes(0), s3cache.GCMinAge(0))
	if err != nil || rep.Leased != 1 || rep.Removed != 0 {
		t.Fatalf("GC of the bucket during the pull: %+v, %v", rep, err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if rep, err := collector.GC(ctx, s3cache.GCMaxBytes(0), s3cache.GCMinAge(0)); err != nil || rep.Removed != 1 {
		t.Fatalf("GC of the bucket after the pull: %+v, %v", rep, err)
	}
}

// TestTierFarRecordsDown: with the bucket unreachable, the tier's roots
// are the near tier's, a record costs nothing remote after the far tier
// is known down, and claims say the tier is alone.
func TestTierFarRecordsDown(t *testing.T) {
	srv := testserver.StartS3(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	o := newOverS3(t, srv, closed, srv.NewBucket(t))
	ctx := t.Context()
	top, _ := storeImage(t, o.c.Near(), "r.example/app:v1", "layer")
	if err := o.c.RecordRoot(ctx, top); err != nil {
		t.Fatalf("RecordRoot with the bucket down = %v, want the near record", err)
	}
	if _, ok, err := o.c.Root(ctx, "r.example/app:v1"); !ok || err != nil {
		t.Fatalf("Root = %v, %v", ok, err)
	}
	if _, ok, err := o.c.Root(ctx, "r.example/other:v1"); ok || err != nil {
		t.Fatalf("Root of an unknown reference with the bucket down = %v, %v; want not found, no error", ok, err)
	}
	cl, _, err := o.c.ClaimRevalidation(ctx, "r.example/app:v1", time.Minute)
	if err != nil || !cl.Claimed || cl.Shared {
		t.Fatalf("claim with the bucket down = %+v, %v; want claimed, not shared", cl, err)
	}
	if err := o.c.LastFarError(); err == nil || !errors.Is(err, cache.ErrOffline) {
		t.Fatalf("LastFarError = %v", err)
	}
}

// TestCapabilityRevalidationClaimer runs the claim suite that the bucket
// runs on two tiers over it, each with its own near tier.
func TestCapabilityRevalidationClaimer(t *testing.T) {
	srv := testserver.StartS3(t)
	cachetest.RunRevalidationClaimer(t, func(t *testing.T) (cache.LayerCache, cache.LayerCache) {
		f := &bucketFleet{t: t, srv: srv, bucket: srv.NewBucket(t)}
		return f.tier(), f.tier()
	})
}
