package buildkit_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/client"

	"github.com/buildcache/buildcache/buildkit"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/s3"
)

// s3CacheEntries are BuildKit's type=s3 cache entries for the bucket,
// under the prefix "buildkit/", the export with mode=max. The daemon
// talks to S3, not this process: it gets the credentials as attributes.
func s3CacheEntries(srv *testserver.S3Server, bucket string) (imports, exports []client.CacheOptionsEntry) {
	attrs := map[string]string{
		"bucket": bucket, "region": srv.Region, "prefix": "buildkit/",
		"endpoint_url": srv.Endpoint, "use_path_style": "true",
		"access_key_id": srv.AccessKey, "secret_access_key": srv.SecretKey,
	}
	exp := maps.Clone(attrs)
	exp["mode"] = "max"
	return []client.CacheOptionsEntry{{Type: "s3", Attrs: attrs}}, []client.CacheOptionsEntry{{Type: "s3", Attrs: exp}}
}

// TestS3CacheImportsAfterCollection: BuildKit exports its cache to a
// bucket (type=s3, mode=max), a collection of the bucket with no budget
// and no minimum age removes everything its cache manifests do not
// list (the garbage next to them), and BuildKit then imports the cache
// and builds with every step cached: the collection kept every blob the
// manifest lists (moby/buildkit#3223, #3686: lifecycle rules that do
// not read the manifests make the import fail with 404).
func TestS3CacheImportsAfterCollection(t *testing.T) {
	testserver.RequireArm64Emulation(t)
	d, c := daemon(t)
	srv := testserver.StartS3(t)
	bucket := srv.NewBucket(t)
	imports, exports := s3CacheEntries(srv, bucket)
	store, manifests := baseInStore(t)
	const image = "base.invalid/prog:1"
	pinned := pinByPlatform(t, store, image, manifests, bothPlatforms...)
	dir := contextDir(t, map[string]string{
		"msg": t.Name() + time.Now().String(),
		"Dockerfile": "FROM " + image + "\n" +
			"COPY msg /msg\n" +
			"RUN [\"/prog\", \"arch\", \"/out/arch\"]\n",
	})
	build := func(imports, exports []client.CacheOptionsEntry) *buildkit.Result {
		t.Helper()
		res, err := buildkit.Build(buildCtx(t), c, dir, buildkit.WithPinned(pinned), buildkit.WithCache(imports, exports),
			buildkit.WithOutput(buildkit.LocalDir(t.TempDir())), progress(t))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	d.PruneAll(t)
	build(nil, exports)

	bucketCache, err := s3.New(srv.Client(), bucket, "buildkit/")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var garbage []v1.Hash
	for i := range 3 {
		b := []byte(strings.Repeat("not in any cache manifest ", 100+i))
		sum := sha256.Sum256(b)
		dg := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
		if err := bucketCache.Put(ctx, dg, int64(len(b)), strings.NewReader(string(b))); err != nil {
			t.Fatal(err)
		}
		garbage = append(garbage, dg)
	}
	rep, err := bucketCache.GC(ctx, s3.GCMaxBytes(0), s3.GCMinAge(0))
	if err != nil {
		t.Fatal(err)
	}
	if rep.BuildKitManifests != 1 || rep.Removed != len(garbage) || rep.Reachable == 0 || rep.Kept != rep.Reachable {
		t.Fatalf("collection of BuildKit's bucket: %+v; want the %d garbage blobs removed and every blob the manifest lists kept", rep, len(garbage))
	}
	for _, dg := range garbage {
		if _, err := bucketCache.Stat(ctx, dg); !errors.Is(err, cache.ErrNotFound) {
			t.Errorf("garbage %s: %v", dg, err)
		}
	}

	d.PruneAll(t)
	second := build(imports, nil)
	requireCached(t, "build after the collection", second)
	t.Logf("after a collection of the bucket (%d blobs kept, %d removed): %d of %d steps cached", rep.Kept, rep.Removed, second.Cached, second.Total)
}
