package s3

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/reach"
)

// What a collection keeps, read in this order: the live leases first,
// then the roots, so that a pull that released its lease before the
// leases were read recorded its root before the roots were read.

// leaseSet is what the leases keep, and the leases of holders gone.
type leaseSet struct {
	blobs   reach.Set
	live    int
	expired []keyTag
}

type keyTag struct{ key, etag string }

// readLeases reads every lease. A lease is live unless the endpoint
// wrote it more than its TTL ago (the endpoint's clock, both ends).
func (c *Cache) readLeases(ctx context.Context) (*leaseSet, error) {
	ls := &leaseSet{blobs: reach.Set{}}
	err := c.listKeys(ctx, c.fleetKey(leasesDir, ""), func(key string, _ int64, modified time.Time, etag string, now time.Time) error {
		b, _, _, err := c.getSmall(ctx, key)
		if isNotFound(err) {
			return nil // released meanwhile
		}
		if err != nil {
			return c.remoteErr("gc: read lease", key, err)
		}
		var doc leaseDoc
		if json.Unmarshal(b, &doc) != nil || doc.TTL <= 0 {
			doc.TTL = c.opts.leaseTTL // not readable: judged by ours
		}
		if now.Sub(modified) > doc.TTL {
			ls.expired = append(ls.expired, keyTag{key, etag})
			return nil
		}
		ls.live++
		for _, h := range doc.Blobs {
			ls.blobs.Add(v1.Hash{Algorithm: "sha256", Hex: h})
		}
		return nil
	})
	return ls, err
}

// roots is what the records and BuildKit's cache manifests reach.
type roots struct {
	reached   reach.Set
	records   int
	pruned    []string
	manifests map[string]string // BuildKit manifest key -> ETag, as read
}

// readRoots prunes records (when asked) and walks every record's root
// in the bucket, then reads BuildKit's cache manifests.
func (c *Cache) readRoots(ctx context.Context, o gcOptions) (*roots, error) {
	r := &roots{reached: reach.Set{}, manifests: map[string]string{}}
	prefix := c.fleetKey(recordsDir, "")
	cutoff := c.opts.now().Add(-o.pruneOlder)
	err := c.listKeys(ctx, prefix, func(key string, _ int64, _ time.Time, _ string, _ time.Time) error {
		name := strings.TrimPrefix(key, prefix)
		s, found, err := c.readRecord(ctx, name)
		if err != nil || !found {
			return err
		}
		doc := s.doc
		claimLive := doc.Claim != nil && c.opts.now().Before(doc.Claim.Until)
		if !claimLive && (doc.Root == nil || o.pruneOlder >= 0 && resolvedAt(*doc.Root).Before(cutoff)) {
			if !o.dryRun {
				if err := c.deleteKey(ctx, key, s.etag); err != nil {
					return c.remoteErr("gc: prune record", key, err)
				}
				c.records.Delete(name)
			}
			if doc.Root != nil {
				r.pruned = append(r.pruned, name)
			}
			return nil
		}
		if doc.Root == nil {
			return nil
		}
		r.records++
		_, err = reach.Walk(ctx, *doc.Root, c.gcGet, r.reached, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = c.eachBuildKitManifest(ctx, func(key, etag string, blobs []v1.Hash) error {
		r.manifests[key] = etag
		for _, d := range blobs {
			r.reached.Add(d)
		}
		return nil
	})
	return r, err
}

// gcGet reads a manifest for a walk: verified, without touching it, and
// a damaged one (which the read removes) counts as absent.
func (c *Cache) gcGet(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
	b, err := c.readManifest(withoutTouch(ctx), desc.Digest)
	if errors.Is(err, cache.ErrCorrupt) {
		return nil, fmt.Errorf("%w (%v)", cache.ErrNotFound, err)
	}
	return b, err
}

// maxBuildKitManifest bounds a BuildKit cache manifest: mode=max caches
// of large builds list thousands of records, far below this.
const maxBuildKitManifest = 256 << 20

// eachBuildKitManifest reads every BuildKit cache manifest under the
// manifests prefix and hands fn the blobs its layers name. BuildKit's
// format (cache/remotecache/v1 CacheConfig): {"layers": [{"blob":
// "sha256:…", …}], "records": […]}, where only layers name blobs. A
// manifest that cannot be read as one is an error: what it keeps is
// unknown, so nothing may be collected.
func (c *Cache) eachBuildKitManifest(ctx context.Context, fn func(key, etag string, blobs []v1.Hash) error) error {
	prefix := c.prefix + c.opts.manifestsPrefix
	return c.listKeys(ctx, prefix, func(key string, _ int64, _ time.Time, _ string, _ time.Time) error {
		if strings.HasPrefix(key, c.blobsKeyPrefix()) || strings.HasPrefix(key, c.fleetKey(fleetDir, "")) {
			return nil // an empty manifests prefix lists everything
		}
		blobs, etag, err := c.readBuildKitManifest(ctx, key)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(key, etag, blobs)
	})
}

func (c *Cache) readBuildKitManifest(ctx context.Context, key string) ([]v1.Hash, string, error) {
	out, err := c.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)}, noResponseChecksum)
	if err != nil {
		if isNotFound(err) {
			return nil, "", err
		}
		return nil, "", c.remoteErr("gc: read BuildKit cache manifest", key, err)
	}
	defer out.Body.Close()
	var m struct {
		Layers []struct {
			Blob string `json:"blob"`
		} `json:"layers"`
	}
	if err := json.NewDecoder(io.LimitReader(out.Body, maxBuildKitManifest)).Decode(&m); err != nil {
		return nil, "", fmt.Errorf("s3: gc: s3://%s/%s is not a BuildKit cache manifest (%w): refusing to collect blobs it may list", c.bucket, key, err)
	}
	blobs := make([]v1.Hash, 0, len(m.Layers))
	for _, l := range m.Layers {
		d, err := cache.ParseDigest(l.Blob)
		if err != nil {
			return nil, "", fmt.Errorf("s3: gc: BuildKit cache manifest s3://%s/%s lists %q: %w; refusing to collect", c.bucket, key, l.Blob, err)
		}
		blobs = append(blobs, d)
	}
	return blobs, aws.ToString(out.ETag), nil
}

type noTouchKey struct{}

// withoutTouch marks reads that must not refresh what they read (a
// collector's).
func withoutTouch(ctx context.Context) context.Context {
	return context.WithValue(ctx, noTouchKey{}, true)
}
