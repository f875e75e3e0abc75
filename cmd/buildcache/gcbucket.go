package main

import (
	"fmt"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/s3"
)

// gc on a bucket: an s3:// cache, or with --far the far tier of a
// tier:// cache, collected by s3.Cache.GC — the fleet's records,
// BuildKit's cache manifests and live leases keep what they reach.

const gcBucketHelp = `
On a bucket (--cache s3://…, or --far with a tier:// whose far tier is
one) gc collects the bucket that every process of a fleet shares: it
keeps what any process's tag records and BuildKit's own cache manifests
(manifests/ in the same bucket) reach, what a pull in progress anywhere
holds in a lease, and what is younger than --min-age (default 1h: BuildKit
uploads blobs before the manifest that lists them); --prune-older-than D
deletes the records of tags not checked for D first. Last use is an
object's LastModified, which touch_refresh=D on the s3:// URL refreshes
when a blob is read (as BuildKit's touch_refresh does). Two collectors at
once: the second does nothing ("skipped"). With --json on a bucket:
{"removed", "freed_bytes", "kept", "kept_bytes", "reachable", "leased",
"young", "records", "buildkit_manifests", "pruned": [ref],
"manifests_dropped": [key], "leases", "leases_expired", "uploads_aborted",
"deferred", "dry_run", "skipped", "candidates": [...]}.
`

// bucketOf finds the bucket gc collects: the cache itself, or with far
// a tier's far tier. ok is false for a cache gc collects locally.
func (a *app) bucketOf(c cache.LayerCache, far bool) (*s3.Cache, bool, error) {
	if far {
		t, isTier := c.(cache.Tiered)
		if !isTier {
			return nil, false, usagef("--far needs a tier:// cache; %s is not one", a.cacheName())
		}
		b, ok := cache.As[*s3.Cache](t.Far())
		if !ok {
			return nil, false, usagef("--far: the far tier of %s is not an s3:// bucket", a.cacheName())
		}
		return b, true, nil
	}
	if b, ok := c.(*s3.Cache); ok {
		return b, true, nil
	}
	return nil, false, nil
}

type bucketGCFlags struct {
	maxBytes           int64
	ttl, olders, minAg time.Duration
	dryRun             bool
}

func (a *app) gcBucket(cmd *cobra.Command, b *s3.Cache, f bucketGCFlags) error {
	fl := cmd.Flags()
	var opts []s3.GCOption
	if fl.Changed("ttl") {
		opts = append(opts, s3.GCTTL(f.ttl))
	}
	if fl.Changed("max-bytes") {
		opts = append(opts, s3.GCMaxBytes(f.maxBytes))
	}
	if fl.Changed("prune-older-than") {
		opts = append(opts, s3.GCPruneRecords(f.olders))
	}
	if fl.Changed("min-age") {
		opts = append(opts, s3.GCMinAge(f.minAg))
	}
	candidates := []gcCandidate{}
	if f.dryRun {
		opts = append(opts, s3.GCDryRun(), s3.GCCandidates(func(c s3.GCCandidate) {
			candidates = append(candidates, gcCandidate{c.Digest.String(), c.Size, c.LastUse, string(c.Reason)})
		}))
	}
	fmt.Fprintf(a.stderr, "gc: collecting the bucket s3://%s/%s at %s\n", b.Bucket(), b.Prefix(), b.Endpoint())
	rep, err := b.GC(cmd.Context(), opts...)
	if err != nil {
		return err
	}
	if a.json {
		out := struct {
			Removed           int           `json:"removed"`
			FreedBytes        int64         `json:"freed_bytes"`
			Kept              int           `json:"kept"`
			KeptBytes         int64         `json:"kept_bytes"`
			Reachable         int           `json:"reachable"`
			Leased            int           `json:"leased"`
			Young             int           `json:"young"`
			Records           int           `json:"records"`
			BuildKitManifests int           `json:"buildkit_manifests"`
			Pruned            []string      `json:"pruned"`
			ManifestsDropped  []string      `json:"manifests_dropped"`
			Leases            int           `json:"leases"`
			LeasesExpired     int           `json:"leases_expired"`
			UploadsAborted    int           `json:"uploads_aborted"`
			Deferred          int           `json:"deferred"`
			DryRun            bool          `json:"dry_run,omitempty"`
			Skipped           bool          `json:"skipped,omitempty"`
			Candidates        []gcCandidate `json:"candidates,omitempty"`
		}{rep.Removed, rep.FreedBytes, rep.Kept, rep.KeptBytes, rep.Reachable, rep.Leased, rep.Young,
			rep.Records, rep.BuildKitManifests, nonNil(rep.RecordsPruned), nonNil(rep.ManifestsDropped),
			rep.Leases, rep.LeasesExpired, rep.UploadsAborted, rep.Deferred, rep.DryRun, rep.Skipped, nil}
		if f.dryRun {
			out.Candidates = candidates
		}
		return a.printJSON(out)
	}
	if rep.Skipped {
		fmt.Fprintln(a.stdout, "another collector is running on the bucket: nothing done")
		return nil
	}
	for _, ref := range rep.RecordsPruned {
		fmt.Fprintf(a.stdout, "pruned %s\n", ref)
	}
	verb := "removed"
	if f.dryRun {
		verb = "would remove"
		for _, c := range candidates {
			fmt.Fprintf(a.stdout, "would remove %s  %s  last used %s  (%s)\n", c.Digest, humanize.IBytes(uint64(c.Size)), c.LastUse.Format(time.RFC3339), c.Reason)
		}
	}
	fmt.Fprintf(a.stdout, "%s %d blobs, %s; kept %d blobs, %s (%d reached by %d records and %d BuildKit cache manifests, %d in %d leases of pulls in progress, %d younger than the minimum age)\n",
		verb, rep.Removed, humanize.IBytes(uint64(rep.FreedBytes)), rep.Kept, humanize.IBytes(uint64(rep.KeptBytes)),
		rep.Reachable, rep.Records, rep.BuildKitManifests, rep.Leased, rep.Leases, rep.Young)
	for _, m := range rep.ManifestsDropped {
		fmt.Fprintf(a.stdout, "deleted BuildKit cache manifest %s: written during the collection, it listed a removed blob\n", m)
	}
	if rep.LeasesExpired+rep.UploadsAborted > 0 {
		fmt.Fprintf(a.stdout, "removed %d expired leases and %d abandoned uploads\n", rep.LeasesExpired, rep.UploadsAborted)
	}
	if rep.Deferred > 0 {
		fmt.Fprintf(a.stderr, "%d blobs left for the next collection: the deletion window ran out\n", rep.Deferred)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
