package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/imagewalk"
	"github.com/buildcache/buildcache/localfs"
)

// checkIsStore accepts a cache (one that another process is creating
// too), an empty directory and a missing one.
func checkIsStore(dir string) error {
	// The directory is read before IsStore looks, not after: Open makes
	// .buildcache before any other entry, so an entry seen here that an
	// Open in progress made means IsStore sees that Open below.
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(entries) == 0) || localfs.IsStore(dir) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading cache directory: %w", err)
	}
	return usagef("%s is not a cache (it has no oci-layout file) and is not empty: refusing to make it one; pass --cache with a cache directory", dir)
}

// recordedImages returns the store's roots that a resolver recorded: those
// with a reference name, sorted by it.
func recordedImages(ctx context.Context, store cache.RootIndex) ([]v1.Descriptor, error) {
	im, err := store.Index(ctx)
	if err != nil {
		return nil, err
	}
	var out []v1.Descriptor
	for _, d := range im.Manifests {
		if d.Annotations[cache.AnnotationRefName] != "" {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b v1.Descriptor) int {
		return strings.Compare(a.Annotations[cache.AnnotationRefName], b.Annotations[cache.AnnotationRefName])
	})
	return out, nil
}

type lsImage struct {
	Ref        string     `json:"ref"`
	Digest     string     `json:"digest"`
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
	Platforms  []string   `json:"platforms"`
	Blobs      int        `json:"blobs"`
	Bytes      int64      `json:"bytes"`
	Missing    int        `json:"missing,omitempty"`
	Error      string     `json:"error,omitempty"`
}

func (a *app) lsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the images recorded in the cache",
		Long: `List the images recorded in the cache: the reference, the digest it
pointed to when last resolved, when that was, the platforms stored, and the
blobs and bytes the image occupies (blobs shared by several images count for
each). With --json: {"images": [{"ref", "digest", "resolved_at",
"platforms", "blobs", "bytes", "missing", "error"}]}.

` + seeExitCodes,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			store, err := a.openCache(ctx, true)
			if err != nil {
				return err
			}
			index, ok := persistentRoots(store)
			if !ok {
				return a.refuse("ls", "the roots a resolver records (a cache.RootIndex that outlives the process)")
			}
			roots, err := recordedImages(ctx, index)
			if err != nil {
				return err
			}
			images := []lsImage{}
			for _, d := range roots {
				img := lsImage{Ref: d.Annotations[cache.AnnotationRefName], Digest: d.Digest.String(), Platforms: []string{}}
				if t, err := time.Parse(time.RFC3339Nano, d.Annotations[cache.AnnotationResolvedAt]); err == nil {
					img.ResolvedAt = &t
				}
				fp := imagewalk.Measure(ctx, store, d.Digest, nil)
				img.Blobs, img.Bytes, img.Missing = fp.Blobs, fp.Bytes, fp.Missing
				if fp.Platforms != nil {
					img.Platforms = fp.Platforms
				}
				if fp.Err != nil {
					img.Error = fp.Err.Error()
				}
				images = append(images, img)
			}
			if a.json {
				return a.printJSON(struct {
					Images []lsImage `json:"images"`
				}{images})
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REF\tDIGEST\tPLATFORMS\tRESOLVED\tBLOBS\tSIZE")
			for _, img := range images {
				resolved := "-"
				if img.ResolvedAt != nil {
					resolved = humanize.Time(*img.ResolvedAt)
				}
				blobs := fmt.Sprint(img.Blobs)
				if img.Missing > 0 {
					blobs += fmt.Sprintf(" (%d missing)", img.Missing)
				}
				platforms := strings.Join(img.Platforms, ",")
				if platforms == "" {
					platforms = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", img.Ref, shortDigest(img.Digest), platforms, resolved, blobs, humanize.IBytes(uint64(img.Bytes)))
				if img.Error != "" {
					a.warnf("%s: %s", img.Ref, img.Error)
				}
			}
			return tw.Flush()
		}),
	}
}

type badBlob struct {
	Digest string `json:"digest"`
	Error  string `json:"error"`
}

func (a *app) verifyCommand() *cobra.Command {
	var remove bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Hash every blob in the cache and report the bad ones",
		Long: `Hash every blob in the cache and check that the recorded images' blobs are
present. A bad blob (its bytes do not hash to its name) makes verify exit 4,
unless --remove removed it; an image that lost a blob is pulled again by the
next warm or resolve. Missing blobs are reported but are not an error. An
entry named like a blob but is not a regular file (a symbolic link) is
bad too. Blobs that could not be read are reported as unchecked and make
verify exit 1. With --json: {"checked", "bytes", "bad": [{"digest",
"error"}], "removed", "missing": [digest], "unchecked": [{"digest",
"error"}]}.

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			c, err := a.openCache(cmd.Context(), true)
			if err != nil {
				return err
			}
			store, err := a.localStoreFor(c, "verify", "a local store's blob check (localfs Verify)")
			if err != nil {
				return err
			}
			where := store.Dir()
			var opts []localfs.VerifyOption
			if remove {
				opts = append(opts, localfs.VerifyRemove())
			}
			bar := a.countBar("verifying blobs")
			if bar != nil {
				opts = append(opts, localfs.VerifyProgress(bar.update))
			}
			rep, err := store.Verify(cmd.Context(), opts...)
			bar.finish()
			if err != nil {
				return err
			}
			out := struct {
				Checked   int       `json:"checked"`
				Bytes     int64     `json:"bytes"`
				Bad       []badBlob `json:"bad"`
				Removed   int       `json:"removed"`
				Missing   []string  `json:"missing"`
				Unchecked []badBlob `json:"unchecked"`
			}{Checked: rep.Checked, Bytes: rep.Bytes, Bad: []badBlob{}, Removed: rep.Removed, Missing: []string{}, Unchecked: []badBlob{}}
			for _, b := range rep.Bad {
				out.Bad = append(out.Bad, badBlob{b.Digest.String(), b.Err.Error()})
			}
			for _, b := range rep.Unchecked {
				out.Unchecked = append(out.Unchecked, badBlob{b.Digest.String(), b.Err.Error()})
			}
			for _, d := range rep.Missing {
				out.Missing = append(out.Missing, d.String())
			}
			if a.json {
				if err := a.printJSON(out); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "checked %d blobs, %s\n", rep.Checked, humanize.IBytes(uint64(rep.Bytes)))
				for _, b := range out.Bad {
					fmt.Fprintf(a.stdout, "bad %s: %s\n", b.Digest, b.Error)
				}
				if len(rep.Bad) > 0 {
					fmt.Fprintf(a.stdout, "removed %d of %d bad blobs\n", rep.Removed, len(rep.Bad))
				}
				for _, d := range out.Missing {
					fmt.Fprintf(a.stdout, "missing %s (warm pulls it again)\n", d)
				}
				for _, b := range out.Unchecked {
					fmt.Fprintf(a.stdout, "unchecked %s: %s\n", b.Digest, b.Error)
				}
			}
			if left := len(rep.Bad) - rep.Removed; left > 0 {
				hint := ""
				if !remove {
					hint = "; verify --remove removes them"
				}
				return fmt.Errorf("%d bad blobs in %s%s: %w", left, where, hint, cache.ErrCorrupt)
			}
			if len(rep.Unchecked) > 0 {
				return fmt.Errorf("%d blobs in %s could not be checked", len(rep.Unchecked), where)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the bad blobs")
	return cmd
}

func (a *app) gcCommand() *cobra.Command {
	var (
		maxBytes            int64
		ttl, olders, minAge time.Duration
		dryRun, far         bool
	)
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Drop old image records and remove blobs no recorded image needs",
		Long: `Collect garbage in the cache, in two steps:

 1. With --prune-older-than D, drop the records of images not resolved for
    longer than D (0s drops them all), so their blobs are no longer kept.
 2. Remove blobs that no recorded image reaches: with --ttl D, those unused
    for longer than D; with --max-bytes N, the least recently used until the
    blobs fit in N bytes. 0 for either removes every such blob. Without
    either flag, only abandoned temp files are removed.

Blobs of recorded images (and of any other index.json entry) are never
removed, nor are those of pulls in progress in other processes: they hold
a lease until they have recorded their image. With --dry-run, nothing is
removed: gc lists the blobs it would remove, least recently used first,
each with its reason (expired: unused for longer than --ttl; over-budget:
among the least recently used beyond --max-bytes); it does not combine
with --prune-older-than. Sizes take units (500MB, 10GiB);
durations take Go's units and d for days (7d, 36h). With --json:
{"pruned": [ref], "removed", "freed_bytes", "kept", "kept_bytes",
"reachable", "recorded", "leased", "temps_removed", "dry_run",
"candidates": [{"digest", "size", "last_use", "reason"}]}: candidates
are listed with --dry-run only; reachable counts the
blobs index.json reaches, recorded those of them that recorded images
(entries with a reference name) reach, leased those kept for pulls in
progress.
` + gcBucketHelp + `
` + seeExitCodes,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.openCache(ctx, true)
			if err != nil {
				return err
			}
			if b, ok, err := a.bucketOf(c, far); err != nil || ok {
				if err != nil {
					return err
				}
				return a.gcBucket(cmd, b, bucketGCFlags{maxBytes, ttl, olders, minAge, dryRun})
			}
			store, err := a.localStoreFor(c, "gc", "a local store's garbage collector (localfs GC)")
			if err != nil {
				return err
			}
			pruned := []string{}
			if dryRun && cmd.Flags().Changed("prune-older-than") {
				return usagef("--dry-run does not combine with --prune-older-than: pruning changes index.json, which a dry run must not")
			}
			if cmd.Flags().Changed("prune-older-than") {
				res, err := a.newResolver(c) // the roots are c's: a tier's are its near tier's
				if err != nil {
					return err
				}
				dropped, err := res.Prune(ctx, olders)
				if err != nil {
					return err
				}
				if dropped != nil {
					pruned = dropped
				}
			}
			var opts []localfs.GCOption
			collect := false
			if cmd.Flags().Changed("ttl") {
				collect = true
				// localfs reads a TTL of 0 as "no expiry"; here it means
				// "expired now", which one nanosecond is.
				opts = append(opts, localfs.GCTTL(max(ttl, time.Nanosecond)))
			}
			if cmd.Flags().Changed("max-bytes") {
				collect = true
				// Likewise a budget of 0 is "no budget" to localfs.
				opts = append(opts, localfs.GCMaxBytes(max(maxBytes, 1)))
			}
			candidates := []gcCandidate{}
			if dryRun {
				opts = append(opts, localfs.GCDryRun(), localfs.GCCandidates(func(c localfs.GCCandidate) {
					candidates = append(candidates, gcCandidate{c.Digest.String(), c.Size, c.LastUse, string(c.Reason)})
				}))
			}
			bar := a.countBar("collecting blobs")
			if bar != nil {
				opts = append(opts, localfs.GCProgress(bar.update))
			}
			rep, err := store.GC(ctx, opts...)
			bar.finish()
			if err != nil {
				return err
			}
			out := struct {
				Pruned       []string      `json:"pruned"`
				Removed      int           `json:"removed"`
				FreedBytes   int64         `json:"freed_bytes"`
				Kept         int           `json:"kept"`
				KeptBytes    int64         `json:"kept_bytes"`
				Reachable    int           `json:"reachable"`
				Recorded     int           `json:"recorded"`
				Leased       int           `json:"leased"`
				TempsRemoved int           `json:"temps_removed"`
				DryRun       bool          `json:"dry_run,omitempty"`
				Candidates   []gcCandidate `json:"candidates,omitempty"`
			}{pruned, rep.Removed, rep.FreedBytes, rep.Kept, rep.KeptBytes, rep.Roots, rep.Named, rep.Leased, rep.TempsRemoved, dryRun, candidates}
			if !dryRun {
				out.Candidates = nil
			}
			if a.json {
				return a.printJSON(out)
			}
			for _, ref := range pruned {
				fmt.Fprintf(a.stdout, "pruned %s\n", ref)
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
				for _, c := range candidates {
					fmt.Fprintf(a.stdout, "would remove %s  %s  last used %s  (%s)\n", c.Digest, humanize.IBytes(uint64(c.Size)), c.LastUse.Format(time.RFC3339), c.Reason)
				}
			}
			fmt.Fprintf(a.stdout, "%s %d blobs, %s; kept %d blobs, %s (%d of recorded images",
				verb, rep.Removed, humanize.IBytes(uint64(rep.FreedBytes)), rep.Kept, humanize.IBytes(uint64(rep.KeptBytes)), rep.Named)
			if other := rep.Roots - rep.Named; other > 0 {
				fmt.Fprintf(a.stdout, ", %d of other index.json entries", other)
			}
			if rep.Leased > 0 {
				fmt.Fprintf(a.stdout, ", %d of pulls in progress", rep.Leased)
			}
			fmt.Fprint(a.stdout, ")")
			if rep.TempsRemoved > 0 {
				fmt.Fprintf(a.stdout, "; removed %d abandoned temp files", rep.TempsRemoved)
			}
			fmt.Fprintln(a.stdout)
			if unneeded := rep.Kept - rep.Roots - rep.Leased; !collect && unneeded > 0 {
				fmt.Fprintf(a.stderr, "%d blobs that no index.json entry needs were kept: --ttl or --max-bytes removes them\n", unneeded)
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.Var(durationValue{&olders}, "prune-older-than", "drop records of images not resolved for longer than this (e.g. 7d)")
	fl.Var(durationValue{&ttl}, "ttl", "remove unneeded blobs unused for longer than this (e.g. 14d)")
	fl.Var(sizeValue{&maxBytes}, "max-bytes", "remove least recently used unneeded blobs until all blobs fit in this (e.g. 10GiB)")
	fl.BoolVar(&dryRun, "dry-run", false, "remove nothing; list what would be removed and why")
	fl.BoolVar(&far, "far", false, "collect the far tier (a bucket) of a tier:// cache instead of its near tier")
	fl.Var(durationValue{&minAge}, "min-age", "on a bucket: keep every blob younger than this (default 1h)")
	return cmd
}

// gcCandidate is a blob gc --dry-run would remove.
type gcCandidate struct {
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	LastUse time.Time `json:"last_use"`
	Reason  string    `json:"reason"`
}
