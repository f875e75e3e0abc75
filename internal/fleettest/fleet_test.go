package fleettest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/imagewalk"
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

// s3Client is a client of the bucket for the test's own checks.
func (f *fleet) bucketCache() *s3cache.Cache {
	c, err := s3cache.New(f.s3.Client(), f.bucket, prefix)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// pulled is what a client got: digests it verified itself.
type pulled struct {
	top     v1.Hash
	corrupt int // blobs whose bytes did not match their digest
	blobs   int
}

// pull pulls every platform of ref through a mirror, as a daemon does
// (index, manifests, configs, layers), and hashes every layer it reads.
func pull(ctx context.Context, ref string) (pulled, error) {
	var p pulled
	r, err := name.ParseReference(ref)
	if err != nil {
		return p, err
	}
	idx, err := remote.Index(r, remote.WithContext(ctx))
	if err != nil {
		return p, err
	}
	if p.top, err = idx.Digest(); err != nil {
		return p, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return p, err
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return p, err
		}
		if _, err := img.RawConfigFile(); err != nil { // verified against its digest by the client
			return p, err
		}
		layers, err := img.Layers()
		if err != nil {
			return p, err
		}
		for _, l := range layers {
			want, err := l.Digest()
			if err != nil {
				return p, err
			}
			rc, err := l.Compressed()
			if err != nil {
				return p, err
			}
			h := sha256.New()
			_, err = io.Copy(h, rc)
			rc.Close()
			p.blobs++
			if err != nil {
				if strings.Contains(err.Error(), "digest") {
					p.corrupt++ // a body cut short or wrong: the client refused it
					continue
				}
				return p, err
			}
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.String() {
				p.corrupt++
			}
		}
	}
	return p, nil
}

// collectors runs n `buildcache gc` loops on the bucket with the byte
// budget until stop, and counts what they did.
type collectors struct {
	runs, skipped, removed, failed atomic.Int64
	outage                         atomic.Int64 // odd while the bucket is stopped: failures then are expected
	stop                           chan struct{}
	done                           sync.WaitGroup
}

func (f *fleet) collect(n int) *collectors {
	c := &collectors{stop: make(chan struct{})}
	for i := range n {
		c.done.Go(func() {
			for {
				select {
				case <-c.stop:
					return
				default:
				}
				before := c.outage.Load()
				p := start(f.t, fmt.Sprintf("gc-%d", i), f.bin, f.env, "--cache", f.bucketURL(), "--json",
					"gc", "--max-bytes", fmt.Sprint(f.budget), "--min-age", "0s", "--prune-older-than", "30d")
				code := p.wait()
				c.runs.Add(1)
				var rep struct {
					Removed int  `json:"removed"`
					Skipped bool `json:"skipped"`
				}
				out := p.out.String()
				if after := c.outage.Load(); code != 0 && (before != after || before%2 == 1) {
					continue // the bucket was stopped during the run
				}
				if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &rep) != nil {
					c.failed.Add(1)
					f.t.Errorf("gc-%d exited %d:\n%s", i, code, tail(out, 10))
					return
				}
				c.removed.Add(int64(rep.Removed))
				if rep.Skipped {
					c.skipped.Add(1)
				}
				time.Sleep(100 * time.Millisecond) // pacing, not synchronisation
			}
		})
	}
	return c
}

func (c *collectors) halt() {
	close(c.stop)
	c.done.Wait()
}

// TestFleet is the fleet of issue 21 with real processes; see the
// package doc.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("the fleet test runs real processes for a minute")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute) // hang guard
	defer cancel()
	f := &fleet{t: t, bin: binary(t), s3: testserver.StartS3Server(t), reg: testserver.StartRegistry(t)}
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
		reachable += imageBytes(t, idx)
	}
	big := ti.RandomIndex([]string{"linux/amd64"}, 48<<20, 1)
	tops["big:v1"] = ti.Push(f.reg.Host+"/big:v1", big)
	reachable += imageBytes(t, big)
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
	f.up.tagRequests()

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
	perTag := f.up.tagRequests()
	for _, tag := range tags {
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
	bigLayer := largestLayer(t, big)
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

// pullSome reads the first n bytes of the largest layer of ref's first
// image through a mirror, then stops.
func pullSome(ctx context.Context, ref string, n int64) (int64, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return 0, err
	}
	idx, err := remote.Index(r, remote.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) == 0 {
		return 0, fmt.Errorf("index: %v", err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return 0, err
	}
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		return 0, fmt.Errorf("layers: %v", err)
	}
	rc, err := layers[len(layers)-1].Compressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.CopyN(io.Discard, rc, n)
}

// imageBytes is what an index and everything under it weigh.
func imageBytes(t *testing.T, idx v1.ImageIndex) int64 {
	t.Helper()
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len(raw))
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		total += d.Size + m.Config.Size
		for _, l := range m.Layers {
			total += l.Size
		}
	}
	return total
}

func keys(t *testing.T, f *fleet, p string) []string {
	t.Helper()
	out, err := f.s3.Client().ListObjectsV2(context.Background(), &awss3.ListObjectsV2Input{Bucket: aws.String(f.bucket), Prefix: aws.String(p)})
	if err != nil {
		t.Fatal(err)
	}
	var ks []string
	for _, o := range out.Contents {
		ks = append(ks, aws.ToString(o.Key))
	}
	return ks
}

// verifyBucket reads every blob of the bucket through the verifying Get
// and returns how many did not match and the blobs' bytes.
func verifyBucket(t *testing.T, f *fleet, b *s3cache.Cache) (bad int, total int64) {
	t.Helper()
	ctx := t.Context()
	err := b.Walk(ctx, func(d v1.Hash, size int64) error {
		total += size
		rc, err := b.Get(ctx, d)
		if err != nil {
			if errors.Is(err, cache.ErrNotFound) {
				total -= size // removed since it was listed
				return nil
			}
			return err
		}
		defer rc.Close()
		if _, err := io.Copy(io.Discard, rc); err != nil {
			bad++
			t.Errorf("blob %s in the bucket: %v", d, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bad, total
}

// largestLayer is the largest layer of idx's first image.
func largestLayer(t *testing.T, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var best v1.Descriptor
	for _, l := range m.Layers {
		if l.Size > best.Size {
			best = l
		}
	}
	return best.Digest
}
