package fleettest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	s3cache "github.com/buildcache/buildcache/s3"
)

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

// collectors are `buildcache gc` loops on the bucket with the byte
// budget, and what they did.
type collectors struct {
	runs, skipped, removed, failed atomic.Int64
	outage                         atomic.Int64 // odd while the bucket is stopped: failures then are expected
	stop                           chan struct{}
	done                           sync.WaitGroup
}

// collect starts n collector loops.
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

// halt stops the loops after their current run.
func (c *collectors) halt() {
	close(c.stop)
	c.done.Wait()
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

// imageFacts is what an index and everything under it weigh, and the
// largest layer of its images.
func imageFacts(t *testing.T, idx v1.ImageIndex) (total int64, largest v1.Hash) {
	t.Helper()
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	total = int64(len(raw))
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var big int64
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
			if l.Size > big {
				big, largest = l.Size, l.Digest
			}
		}
	}
	return total, largest
}

// keys lists the bucket's keys under p.
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
