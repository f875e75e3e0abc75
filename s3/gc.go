package s3

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/reach"
)

// GC collects the bucket (see the package doc, # Collection): it keeps
// every blob that a record or a BuildKit cache manifest reaches, that a
// live lease names, or that is younger than GCMinAge, and removes the
// others that GCTTL expires or that GCMaxBytes's budget has no room
// for, least recently used first. Without GCTTL or GCMaxBytes it
// removes no blob, but still prunes records (GCPruneRecords) and
// removes what processes that died left: expired leases, and multipart
// uploads older than GCMinAge.
//
// Several collectors may run at once: one collects, and the others
// return at once with Skipped set.
func (c *Cache) GC(ctx context.Context, opts ...GCOption) (GCReport, error) {
	o := defaultGCOptions()
	for _, opt := range opts {
		opt(&o)
	}
	rep := GCReport{DryRun: o.dryRun}
	var sw *sweep
	if !o.dryRun {
		var err error
		if sw, err = c.beginSweep(ctx, o.window); err != nil {
			return rep, err
		}
		if sw == nil {
			rep.Skipped = true
			return rep, nil
		}
		defer sw.end()
	}
	leases, err := c.readLeases(ctx)
	if err != nil {
		return rep, err
	}
	rep.Leases = leases.live
	roots, err := c.readRoots(ctx, o)
	if err != nil {
		return rep, err
	}
	rep.Records, rep.RecordsPruned, rep.BuildKitManifests = roots.records, roots.pruned, len(roots.manifests)
	col := &collection{c: c, o: o, sw: sw, leases: leases, roots: roots, rep: &rep, removed: reach.Set{}}
	if err := col.run(ctx); err != nil {
		return rep, err
	}
	if o.dryRun {
		return rep, nil
	}
	if err := col.repair(ctx); err != nil {
		return rep, err
	}
	return rep, col.cleanup(ctx)
}

// collection is one GC's work on the blobs.
type collection struct {
	c       *Cache
	o       gcOptions
	sw      *sweep // nil: a dry run
	leases  *leaseSet
	roots   *roots
	rep     *GCReport
	removed reach.Set
	batch   []s3types.ObjectIdentifier
}

// run lists the blobs and removes what goes: those expired as they are
// listed, then the least recently used of the rest while over budget.
// At most maxHeld candidates are held; when more were left out and the
// budget is still exceeded, the blobs are listed again.
func (col *collection) run(ctx context.Context) error {
	prefix := col.c.blobsKeyPrefix()
	for pass := 1; ; pass++ {
		col.rep.Passes = pass
		held := &candHeap{}
		truncated := false
		var total int64
		err := col.c.listKeys(ctx, prefix, func(key string, size int64, modified time.Time, _ string, now time.Time) error {
			d, err := cache.ParseDigest(strings.TrimPrefix(key, prefix))
			if err != nil {
				return nil // not a blob
			}
			if pass == 1 {
				col.rep.Blobs++
				col.rep.KeptBytes += size
			}
			age := now.Sub(modified)
			switch {
			case col.roots.reached.Has(d):
				col.count(pass, &col.rep.Reachable)
			case col.leases.blobs.Has(d):
				col.count(pass, &col.rep.Leased)
			case col.o.minAge > 0 && age < col.o.minAge:
				col.count(pass, &col.rep.Young)
			case col.o.ttl > 0 && age > col.o.ttl:
				gone, err := col.remove(ctx, GCCandidate{d, size, modified, ReasonExpired})
				if err != nil || gone {
					return err
				}
			default:
				heap.Push(held, GCCandidate{d, size, modified, ReasonOverBudget})
				if held.Len() > col.o.maxHeld {
					heap.Pop(held) // the most recently used
					truncated = true
				}
				col.rep.MaxHeld = max(col.rep.MaxHeld, held.Len())
			}
			total += size
			return nil
		})
		if err == nil {
			err = col.flush(ctx)
		}
		if err != nil {
			return err
		}
		if col.o.maxBytes < 0 || total <= col.o.maxBytes {
			break
		}
		excess := total - col.o.maxBytes
		cands := slices.Clone(*held)
		slices.SortFunc(cands, func(a, b GCCandidate) int { return a.LastUse.Compare(b.LastUse) })
		for _, cd := range cands {
			if excess <= 0 {
				break
			}
			if _, err := col.remove(ctx, cd); err != nil {
				return err
			}
			excess -= cd.Size
		}
		if err := col.flush(ctx); err != nil {
			return err
		}
		if excess <= 0 || !truncated || len(cands) == 0 || (col.sw != nil && !col.sw.open()) {
			break
		}
	}
	col.rep.Kept = col.rep.Blobs - col.rep.Removed
	return nil
}

func (col *collection) count(pass int, n *int) {
	if pass == 1 {
		*n++
	}
}

// remove removes one blob: queued for a batch delete, unless the
// window is over (deferred: it reports false) or this is a dry run.
func (col *collection) remove(ctx context.Context, cd GCCandidate) (bool, error) {
	if col.sw != nil && !col.sw.open() {
		col.rep.Deferred++
		return false, nil
	}
	if col.o.candidates != nil {
		col.o.candidates(cd)
	}
	col.rep.Removed++
	col.rep.FreedBytes += cd.Size
	col.rep.KeptBytes -= cd.Size
	col.removed.Add(cd.Digest)
	if col.sw == nil {
		return true, nil
	}
	col.batch = append(col.batch, s3types.ObjectIdentifier{Key: aws.String(col.c.BlobKey(cd.Digest))})
	if len(col.batch) >= 1000 {
		return true, col.flush(ctx)
	}
	return true, nil
}

// flush deletes the queued blobs with one DeleteObjects (or one
// DeleteObject each, on a store without it).
func (col *collection) flush(ctx context.Context) error {
	if len(col.batch) == 0 {
		return nil
	}
	batch := col.batch
	col.batch = nil
	c := col.c
	out, err := c.client.DeleteObjects(ctx, &awss3.DeleteObjectsInput{
		Bucket: aws.String(c.bucket),
		Delete: &s3types.Delete{Objects: batch, Quiet: aws.Bool(true)},
	})
	if err != nil && (apiCode(err) == "NotImplemented" || httpStatus(err) == 501) {
		for _, obj := range batch {
			if err := c.deleteKey(ctx, aws.ToString(obj.Key), ""); err != nil {
				return c.remoteErr("gc: delete", aws.ToString(obj.Key), err)
			}
		}
		return nil
	}
	if err != nil {
		return c.remoteErr("gc: delete", "", err)
	}
	if len(out.Errors) > 0 {
		e := out.Errors[0]
		return fmt.Errorf("s3: gc: deleting s3://%s/%s: %s %s (and %d more)", c.bucket, aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message), len(out.Errors)-1)
	}
	return nil
}

// repair deletes the BuildKit cache manifests written during the run
// that list a blob it removed: BuildKit looked at the blob (its export
// found it there) before the collection removed it and wrote the
// manifest after. Without the manifest BuildKit's next import misses
// and builds; with it, the import would fail on the missing blob.
func (col *collection) repair(ctx context.Context) error {
	if col.rep.Removed == 0 {
		return nil
	}
	return col.c.eachBuildKitManifest(ctx, func(key, etag string, blobs []v1.Hash) error {
		if col.roots.manifests[key] == etag {
			return nil // read before: none of its blobs was removed
		}
		if !slices.ContainsFunc(blobs, col.removed.Has) {
			return nil
		}
		if err := col.c.deleteKey(ctx, key, etag); err != nil {
			return col.c.remoteErr("gc: drop BuildKit manifest", key, err)
		}
		col.rep.ManifestsDropped = append(col.rep.ManifestsDropped, key)
		return nil
	})
}

// cleanup removes what processes that died left: leases expired (unless
// renewed since), markers of collectors gone, and multipart uploads
// started more than GCMinAge ago.
func (col *collection) cleanup(ctx context.Context) error {
	c := col.c
	for _, l := range col.leases.expired {
		// Renewed since it was read? A store that ignores If-Match on
		// DELETE (MinIO) would delete it all the same: look first.
		if head, err := c.head(ctx, l.key); err != nil || aws.ToString(head.ETag) != l.etag {
			continue
		}
		if err := c.deleteKey(ctx, l.key, l.etag); err != nil {
			return c.remoteErr("gc: remove expired lease", l.key, err)
		}
		col.rep.LeasesExpired++
	}
	_, stale, err := c.markers(ctx)
	if err != nil {
		return err
	}
	for _, m := range stale {
		if err := c.deleteKey(ctx, m.key, ""); err != nil {
			return c.remoteErr("gc: remove stale marker", m.key, err)
		}
	}
	n, err := c.SweepUploads(ctx, max(col.o.minAge, time.Minute))
	col.rep.UploadsAborted = n
	return err
}

// candHeap holds candidates with the most recently used on top, so that
// the least recently used are what stays when it is cut to size.
type candHeap []GCCandidate

func (h candHeap) Len() int           { return len(h) }
func (h candHeap) Less(i, j int) bool { return h[i].LastUse.After(h[j].LastUse) }
func (h candHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *candHeap) Push(x any)        { *h = append(*h, x.(GCCandidate)) }
func (h *candHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
