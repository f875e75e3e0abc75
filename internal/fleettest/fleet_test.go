package fleettest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/imagewalk"
	"github.com/buildcache/buildcache/internal/staticbuild"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
)

func newLoopbackServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// fleet is the bucket, the upstream and how every process reaches them.
type fleet struct {
	t      *testing.T
	bin    string
	s3     *testserver.S3Server
	bucket string
	reg    *testserver.Registry
	up     *counter
	env    []string
	budget int64
}

const (
	prefix   = "fleet/"
	maxAge   = "10m"
	leaseTTL = "3s" // a killed replica's leases expire within the test
)

// bucketURL is the s3:// URL of the shared bucket.
func (f *fleet) bucketURL() string {
	return "s3://" + f.bucket + "/" + prefix + "?region=" + f.s3.Region + "&use_path_style=true&touch_refresh=1h&lease_ttl=" + leaseTTL +
		"&endpoint=" + url.QueryEscape(f.s3.Endpoint)
}

// cacheURL is a process's cache: a near directory of its own in front of
// the bucket.
func (f *fleet) cacheURL() string {
	return "tier://?near=" + url.QueryEscape("file://"+f.t.TempDir()) + "&far=" + url.QueryEscape(f.bucketURL())
}

// replica starts `buildcache serve` over a fresh near directory.
func (f *fleet) replica(name string, args ...string) *proc {
	argv := append([]string{"--cache", f.cacheURL(), "serve", "--listen", "127.0.0.1:0",
		"--upstream", "upstream.test=http://" + f.up.host, "--stale-budget", "2s"}, args...)
	return start(f.t, name, f.bin, f.env, argv...)
}

// bucketCache is a Cache of the bucket for the test's own checks.
func (f *fleet) bucketCache() *s3cache.Cache {
	c, err := s3cache.New(f.s3.Client(), f.bucket, prefix)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// TestFleet is the fleet of issue 21 with real processes; see the
// package doc.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("the fleet test runs real processes for a minute")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute) // hang guard
	defer cancel()
	f := &fleet{t: t, bin: staticbuild.ForTest(t), s3: testserver.StartS3Server(t), reg: testserver.StartRegistry(t)}
	f.bucket = f.s3.NewBucket(t)
	f.up = startCounter(t, f.reg.Host)
	f.env = append(os.Environ(),
		"AWS_ACCESS_KEY_ID="+f.s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+f.s3.SecretKey,
		"AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(t.TempDir(), "none"),
		"DOCKER_CONFIG="+t.TempDir())

	// The upstream: four small two-platform images and a large one.
	ti := testimage.ForTest(t)
	platforms := []string{"linux/amd64", "linux/arm64"}
	tags := []string{"app1:v1", "app2:v1", "app3:v1", "app4:v1"}
	tops := map[string]v1.Hash{}
	var reachable int64
	for _, tag := range tags {
		idx := ti.RandomIndex(platforms, 128<<10, 2)
		tops[tag] = ti.Push(f.reg.Host+"/"+tag, idx)
		n, _ := imageFacts(t, idx)
		reachable += n
	}
	big := ti.RandomIndex([]string{"linux/amd64"}, 48<<20, 1)
	tops["big:v1"] = ti.Push(f.reg.Host+"/big:v1", big)
	n, bigLayer := imageFacts(t, big)
	reachable += n
	// Garbage nobody references, and a budget the collectors must
	// bring the bucket under: everything reachable and 1 MiB.
	f.budget = reachable + 1<<20
	b := f.bucketCache()
	for i := range 24 {
		data := []byte(strings.Repeat(fmt.Sprintf("garbage %02d ", i), 48<<10)) // 528 KiB
		sum := sha256.Sum256(data)
		if err := b.Put(ctx, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, int64(len(data)), strings.NewReader(string(data))); err != nil {
			t.Fatal(err)
		}
	}
	f.up.manifestRequests()

	gc := f.collect(2)
	replicas := []*proc{f.replica("replica-1", "--max-age", maxAge), f.replica("replica-2", "--max-age", maxAge), f.replica("replica-3", "--max-age", maxAge)}
	upRef := func(tag string) string { return f.up.host + "/" + tag }
	var corrupt atomic.Int64

	// Two runners warm app1..app3 at once, cold.
	var runners sync.WaitGroup
	for i := range 2 {
		runners.Go(func() {
			args := []string{"--cache", f.cacheURL(), "--json", "warm", "--platform", "linux/amd64,linux/arm64", "--max-age", maxAge}
			for _, tag := range tags[:3] {
				args = append(args, upRef(tag))
			}
			if p := start(t, fmt.Sprintf("warm-%d", i), f.bin, f.env, args...); p.wait() != 0 {
				t.Errorf("warm-%d failed:\n%s", i, tail(p.out.String(), 20))
			}
		})
	}
	runners.Wait()
	warmTags, _ := f.up.manifestRequests()
	// Ten pulls of each tag spread over the replicas, three at a time.
	for _, tag := range tags {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 3)
		for i := range 10 {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				p, err := pull(ctx, replicas[i%3].addr+"/"+tag)
				if err != nil || p.top != tops[tag] {
					t.Errorf("pull %s through %s: %v, %v", tag, replicas[i%3].name, p.top, err)
				}
				corrupt.Add(int64(p.corrupt))
			})
		}
		wg.Wait()
	}
	pullTags, pullRepos := f.up.manifestRequests()
	perTag := map[string]int{}
	for _, tag := range tags {
		perTag[tag] = warmTags[tag] + pullTags[tag]
		if repo, _, _ := strings.Cut(tag, ":"); tag != "app4:v1" && pullRepos[repo] != 0 {
			t.Errorf("%s, warmed by the runners: 10 pulls through the replicas made %d upstream manifest requests, want 0", tag, pullRepos[repo])
		}
		if n := perTag[tag]; n != 1 {
			t.Errorf("%s: %d upstream requests for the tag across 2 runners and 3 replicas within one max age, want 1", tag, n)
		}
	}

	// A replica killed in the middle of the large pull.
	partial := make(chan error, 1)
	go func() {
		_, err := pullSome(ctx, replicas[0].addr+"/big:v1", 1<<20)
		partial <- err
	}()
	if err := <-partial; err != nil {
		t.Fatalf("first MiB of the large image through replica-1: %v", err)
	}
	replicas[0].kill()
	if _, err := b.Stat(ctx, bigLayer); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("the large layer is in the bucket already (%v): replica-1 was not killed in the middle of its pull", err)
	}
	leasesAtKill := len(keys(t, f, prefix+"buildcache/leases/"))
	p, err := pull(ctx, replicas[1].addr+"/big:v1")
	if err != nil || p.top != tops["big:v1"] {
		t.Fatalf("the large image through replica-2 after replica-1 was killed: %v, %v", p.top, err)
	}
	corrupt.Add(int64(p.corrupt))

	// The upstream stopped: fresh replicas serve every tag from the
	// fleet's records, within the max age and (max age 0) stale.
	f.reg.Stop()
	served := map[string]int{}
	for _, args := range [][]string{{"--max-age", maxAge}, {"--max-age", "0s"}} {
		fresh := f.replica("fresh"+args[1], args...)
		for tag := range tops {
			p, err := pull(ctx, fresh.addr+"/"+tag)
			if err != nil || p.top != tops[tag] {
				t.Errorf("upstream stopped, fresh replica (%s): %s: %v, %v", strings.Join(args, " "), tag, p.top, err)
				continue
			}
			served[args[1]]++
			corrupt.Add(int64(p.corrupt))
		}
	}
	f.reg.Start(t)

	// The bucket unreachable for a while: each replica serves from its
	// near directory (and asks the upstream for what it lacks). Last, as
	// a tier leaves a far tier that failed alone for a while after.
	gc.outage.Add(1)
	f.s3.Stop()
	servedBucketDown := 0
	for _, r := range replicas[1:] { // replica-1 was killed
		for _, tag := range tags {
			p, err := pull(ctx, r.addr+"/"+tag)
			if err != nil || p.top != tops[tag] {
				t.Errorf("bucket down: %s through %s: %v, %v", tag, r.name, p.top, err)
				continue
			}
			servedBucketDown++
			corrupt.Add(int64(p.corrupt))
		}
	}
	f.s3.Start(t)
	gc.outage.Add(1)

	// The collectors stop; the killed replica's leases expire, and one
	// more collection removes them.
	gc.halt()
	leasesLeft := -1
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		rep, err := b.GC(ctx, s3cache.GCMaxBytes(f.budget), s3cache.GCMinAge(0))
		if err != nil {
			t.Fatal(err)
		}
		if leasesLeft = len(keys(t, f, prefix+"buildcache/leases/")); leasesLeft == 0 && !rep.Skipped {
			break
		}
	}

	// What the bucket holds: every blob matches its digest, every record
	// reaches a complete image, and the blobs fit the budget.
	bad, bucketBytes := verifyBucket(t, f, b)
	lost := 0
	for tag, top := range tops {
		root, ok, err := b.Root(ctx, upRef(tag))
		if err != nil || !ok || root.Digest != top {
			lost++
			t.Errorf("record of %s: %v, %v, %v", tag, root.Digest, ok, err)
			continue
		}
		if fp := imagewalk.Measure(ctx, b, top, nil); fp.Missing > 0 || fp.Err != nil {
			lost++
			t.Errorf("%s: the bucket lacks %d blobs its record reaches (%v)", tag, fp.Missing, fp.Err)
		}
	}
	uploads, err := f.s3.Client().ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String(f.bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if corrupt.Load() != 0 || bad != 0 || lost != 0 || leasesLeft != 0 || len(uploads.Uploads) != 0 || bucketBytes > f.budget {
		t.Errorf("corrupt blobs served %d, bad blobs in the bucket %d, roots lost %d, leases left %d, uploads left %d, bucket %d bytes over a budget of %d",
			corrupt.Load(), bad, lost, leasesLeft, len(uploads.Uploads), bucketBytes, f.budget)
	}
	if gc.failed.Load() != 0 {
		t.Errorf("%d collections failed", gc.failed.Load())
	}
	t.Logf("fleet on %s: upstream requests per tag within one max age across 2 runners and 3 replicas: %v", f.s3.Kind(), perTag)
	t.Logf("10 pulls of each tag spread over 3 replicas (max age %s): upstream manifest requests of any kind, by repository: %v (app4, not warmed: its tag once, then its platform manifests by digest once for the fleet)", maxAge, pullRepos)
	t.Logf("bucket stopped: the replicas served %d of %d pulls from their near directories", servedBucketDown, (len(replicas)-1)*len(tags))
	t.Logf("upstream stopped: a fresh replica served %d of %d tags within the max age and %d of %d stale (max age 0)", served[maxAge], len(tops), served["0s"], len(tops))
	t.Logf("replica-1 killed in the middle of a 48 MiB pull: %d lease objects in the bucket then, %d after its lease TTL (%s) and a collection",
		leasesAtKill, leasesLeft, leaseTTL)
	t.Logf("corrupt blobs served: %d; bad blobs in the bucket: %d; roots lost: %d; multipart uploads left: %d",
		corrupt.Load(), bad, lost, len(uploads.Uploads))
	t.Logf("bucket: %d bytes of blobs against a budget of %d (%d reachable); collectors ran %d times, %d skipped (another was running), removed %d blobs",
		bucketBytes, f.budget, reachable, gc.runs.Load(), gc.skipped.Load(), gc.removed.Load())
	if served[maxAge] != len(tops) || served["0s"] != len(tops) {
		t.Errorf("fresh replicas served %v of %d tags with the upstream stopped", served, len(tops))
	}
}
