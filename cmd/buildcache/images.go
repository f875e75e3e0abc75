package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/imagewalk"
	"github.com/buildcache/buildcache/internal/redact"
	"github.com/buildcache/buildcache/registry"
)

// resolveFlags are the flags warm and resolve share.
type resolveFlags struct {
	platforms []string
	policy    string
	maxAge    time.Duration
	reserve   int
	explain   bool
	stale     time.Duration // --stale-budget
	trust     trustFlags    // trust.go
}

func (f *resolveFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVar(&f.platforms, "platform", nil, "resolve these `platforms` (os/arch[/variant]), comma-separated or repeated (default: this machine's)")
	fl.StringVar(&f.policy, "policy", "always", "pull policy: always (revalidate with one HEAD, pull what changed), if-not-present (no request when cached) or never (offline)")
	fl.Var(durationValue{&f.maxAge}, "max-age", "with --policy always, serve a cached image checked less than this long ago with no request (default 0: always revalidate)")
	fl.BoolVar(&f.explain, "explain", false, "say under each image (and with --json, in \"why\") why it was served from where it was")
	f.stale = registry.DefaultStaleBudget
	fl.Var(durationValue{&f.stale}, "stale-budget", staleBudgetHelp)
	fl.IntVar(&f.reserve, "rate-limit-reserve", -1, "keep the last `N` pulls of a registry's rate limit (RateLimit-Remaining) for uncached images: a moved tag with a cached copy is served from the cache (source reserved); -1 is off")
	f.trust.add(cmd, cmd.Name() == "warm")
}

// resolverOptions are the Resolver's options the flags ask for.
func (f *resolveFlags) resolverOptions() []registry.Option {
	opts := []registry.Option{registry.WithStaleBudget(f.stale)}
	if f.reserve >= 0 {
		opts = append(opts, registry.WithRateLimitReserve(f.reserve))
	}
	return opts
}

// options checks the flags and the references before anything runs, so a
// typo is a usage error and not a half-done warm.
func (f *resolveFlags) options(refs []string) ([]cache.ResolveOption, error) {
	for _, ref := range refs {
		if _, err := name.ParseReference(ref); err != nil {
			if r := redact.String(ref); r != ref {
				// The parser's error quotes ref, password and all.
				return nil, &usageError{&redactedError{fmt.Sprintf("invalid image reference %q: an image reference carries no credentials (they come from the Docker keychain)", r), err}}
			}
			return nil, &usageError{fmt.Errorf("invalid image reference %q: %w", ref, err)}
		}
	}
	policy, err := cache.ParsePullPolicy(f.policy)
	if err != nil {
		return nil, &usageError{fmt.Errorf("--policy: %w", err)}
	}
	if f.maxAge < 0 {
		return nil, usagef("--max-age: %v is negative", f.maxAge)
	}
	if f.reserve < -1 {
		return nil, usagef("--rate-limit-reserve: %d: want -1 (off) or a count of pulls", f.reserve)
	}
	opts := []cache.ResolveOption{cache.WithPolicy(policy), cache.WithMaxAge(f.maxAge)}
	if len(f.platforms) > 0 {
		for _, p := range f.platforms {
			pp, err := v1.ParsePlatform(p)
			if err != nil || pp.OS == "" || pp.Architecture == "" {
				return nil, usagef("--platform: invalid platform %q: want os/arch[/variant], such as linux/arm64", p)
			}
		}
		opts = append(opts, cache.WithPlatforms(f.platforms...))
	}
	return opts, nil
}

// imageResult is what resolve prints for one image, and the first part of
// what warm prints.
type imageResult struct {
	Ref       string            `json:"ref"`
	Digest    string            `json:"digest,omitempty"`
	Source    string            `json:"source,omitempty"`
	Manifests map[string]string `json:"manifests,omitempty"` // platform -> manifest digest
	// RemoteError is the registry's failure that made Source "stale" (or
	// "reserved", after a 429).
	RemoteError string `json:"remote_error,omitempty"`
	// Why is how the resolver decided.
	Why      *explanationJSON `json:"why,omitempty"`
	Error    string           `json:"error,omitempty"`
	ExitCode int              `json:"exit_code,omitempty"`
}

// warmResult adds what warm checked in the store and what it downloaded.
type warmResult struct {
	imageResult
	Blobs        int    `json:"blobs"`         // blobs of the image's platforms in the store
	Bytes        int64  `json:"bytes"`         // their size
	FetchedBlobs uint64 `json:"fetched_blobs"` // downloaded by this run, manifests included
	FetchedBytes uint64 `json:"fetched_bytes"`
}

func (a *app) resolveCommand() *cobra.Command {
	var f resolveFlags
	cmd := &cobra.Command{
		Use:   "resolve IMAGE...",
		Short: "Resolve images to digests, pulling what the cache lacks, and print the digests",
		Long: `Resolve each IMAGE to the digest its tag points to and the manifest digest
of each platform, and print them:

  IMAGE DIGEST SOURCE
    PLATFORM MANIFEST-DIGEST

SOURCE is hit (no request), revalidated (one HEAD), pulled, stale (the
registry failed) or reserved (a pull held back by --rate-limit-reserve).
Like warm, it stores whatever it has to pull; it shows progress bars only
on a terminal. --explain adds, under each image, why it came from where it
came from: the policy, the last check against --max-age, the digest the
registry returned against the cached one, what was missing and fetched, the
registry's error, and what --trust-policy said of it (a refused image exits 6,
its rule, digest and reason under it). With --json (and --explain for "why"): {"images": [{"ref", "digest", "source",
"manifests": {platform: digest}, "remote_error", "why": {"policy",
"max_age_seconds", "bypass", "last_checked", "age_seconds",
"stored_digest", "remote_digest", "missing", "fetched_blobs",
"fetched_bytes", "upstream_error", "retry_after", "trust", "reason"}, "error",
"exit_code"}]}.

` + exitCodesHelp,
		Args: cobra.MinimumNArgs(1),
	}
	f.add(cmd)
	cmd.RunE = a.runE(func(cmd *cobra.Command, refs []string) error {
		return runBatch(cmd.Context(), a, &f, refs, false, func(_ context.Context, _ *batch, r resolved) imageResult {
			if !a.json && r.Error == "" {
				fmt.Fprintf(a.stdout, "%s %s %s\n", r.Ref, r.Digest, r.Source)
				for _, p := range sortedKeys(r.Manifests) {
					fmt.Fprintf(a.stdout, "  %s %s\n", p, r.Manifests[p])
				}
				if f.explain {
					printExplanation(a.stdout, r.Why)
				}
			}
			return r.imageResult
		})
	})
	return cmd
}

func (a *app) warmCommand() *cobra.Command {
	var f resolveFlags
	cmd := &cobra.Command{
		Use:   "warm IMAGE...",
		Short: "Make sure images are in the cache, pulling with progress what is missing",
		Long: `Resolve each IMAGE as resolve does, make sure every manifest, config and
layer of the requested platforms is in the cache, and report what is stored
and what was downloaded:

  IMAGE DIGEST SOURCE: N platforms, N blobs, SIZE stored; fetched N blobs, SIZE

Progress shows as bars when stderr is a terminal and as log lines otherwise.
With --json: {"images": [{"ref", "digest", "source", "manifests",
"remote_error", "blobs", "bytes", "fetched_blobs", "fetched_bytes", "error",
"exit_code"}]}.

` + exitCodesHelp,
		Args: cobra.MinimumNArgs(1),
	}
	f.add(cmd)
	cmd.RunE = a.runE(func(cmd *cobra.Command, refs []string) error {
		return runBatch(cmd.Context(), a, &f, refs, true, func(ctx context.Context, b *batch, r resolved) warmResult {
			w := warmResult{imageResult: r.imageResult, FetchedBlobs: r.fetched.BlobsFetched, FetchedBytes: r.fetched.BytesFetched}
			if r.img != nil {
				// Resolve has checked the image is complete; count it, and
				// catch what went missing since (a gc in another process).
				fp := imagewalk.Measure(ctx, b.store, r.img.Digest, r.img.Manifests)
				w.Blobs, w.Bytes = fp.Blobs, fp.Bytes
				if err := fp.Check(r.Ref); err != nil {
					b.fail(&w.imageResult, err)
				}
			}
			if !a.json && w.Error == "" {
				fmt.Fprintf(a.stdout, "%s %s %s: %s, %s, %s stored; fetched %s, %s\n",
					w.Ref, w.Digest, w.Source, plural(len(w.Manifests), "platform"), plural(w.Blobs, "blob"), humanize.IBytes(uint64(w.Bytes)),
					plural(int(w.FetchedBlobs), "blob"), humanize.IBytes(w.FetchedBytes))
				if f.explain {
					printExplanation(a.stdout, w.Why)
				}
			}
			return w
		})
	})
	return cmd
}

// runBatch resolves refs one after the other; row prints each outcome and
// returns what --json lists for it. It stops early when interrupted (the
// failure is reported, the rest skipped) and returns the batch's result.
func runBatch[T any](ctx context.Context, a *app, f *resolveFlags, refs []string, logProgress bool, row func(context.Context, *batch, resolved) T) error {
	opts, err := f.options(refs)
	if err != nil {
		return err
	}
	topts, err := f.trust.resolverOptions()
	if err != nil {
		return err
	}
	b, err := a.newBatch(ctx, logProgress, append(f.resolverOptions(), topts...)...)
	if err != nil {
		return err
	}
	out := []T{}
	for _, ref := range refs {
		if ctx.Err() != nil {
			break
		}
		r := b.resolve(ctx, ref, opts)
		if !f.explain {
			r.Why = nil // --json says why only when asked: its documents stay as they were
		} else if r.Why != nil && r.Error != "" && !a.json {
			fmt.Fprintf(a.stdout, "%s refused\n", r.Ref)
			printExplanation(a.stdout, r.Why)
		}
		out = append(out, row(ctx, b, r))
	}
	if a.json {
		if err := a.printJSON(struct {
			Images []T `json:"images"`
		}{out}); err != nil {
			return err
		}
	}
	return b.result()
}

// resolved is one image's outcome in a batch.
type resolved struct {
	imageResult
	img     *cache.ResolvedImage // nil when it failed
	fetched cache.ResolverStats
}

// batch resolves images one after the other and remembers the exit code
// of the first failure.
type batch struct {
	a     *app
	store cache.LayerCache
	res   *registry.Resolver
	prog  *progress
	first int
}

func (a *app) newBatch(ctx context.Context, logProgress bool, ropts ...registry.Option) (*batch, error) {
	store, err := a.openCache(ctx, false)
	if err != nil {
		return nil, err
	}
	prog := newProgress(a.stderr, isTerminal(a.stderr), logProgress)
	if prog != nil {
		ropts = append(ropts, registry.WithProgress(prog.update))
	}
	res, err := a.newResolver(store, ropts...)
	if err != nil {
		return nil, err
	}
	return &batch{a: a, store: store, res: res, prog: prog}, nil
}

// resolve resolves one reference. A failure is reported on stderr and in
// the result; a stale answer is a warning.
func (b *batch) resolve(ctx context.Context, ref string, opts []cache.ResolveOption) resolved {
	before := b.res.Stats()
	b.prog.start(ref)
	img, err := b.res.Resolve(ctx, ref, opts...)
	b.prog.finish(err)
	r := resolved{imageResult: imageResult{Ref: ref}, fetched: statsDelta(b.res.Stats(), before)}
	if err != nil {
		b.fail(&r.imageResult, err)
		r.Why = untrustedWhy(err)
		return r
	}
	r.img = img
	r.Digest, r.Source, r.Manifests = img.Digest.String(), img.Source.String(), digestStrings(img.Manifests)
	r.Why = explanationOf(img.Why)
	switch img.Source {
	case cache.Stale:
		r.RemoteError = fmt.Sprint(img.RemoteErr)
		b.a.warnf("%s: the registry failed, serving the cached %s (stale): %v", ref, img.Digest, img.RemoteErr)
	case cache.Reserved:
		if img.RemoteErr != nil {
			r.RemoteError = fmt.Sprint(img.RemoteErr)
		}
		b.a.warnf("%s: serving the cached %s (reserved): %s", ref, img.Digest, img.Why.Reason)
	}
	return r
}

// fail records err as r's outcome.
func (b *batch) fail(r *imageResult, err error) {
	code := exitCode(err)
	fmt.Fprintf(b.a.stderr, "buildcache: %s: %v\n", r.Ref, err)
	if b.first == exitOK {
		b.first = code
	}
	*r = imageResult{Ref: r.Ref, Error: err.Error(), ExitCode: code}
}

// result is the batch's outcome: nil, or the first failure's exit code,
// already reported.
func (b *batch) result() error {
	if b.first == exitOK {
		return nil
	}
	return &reportedError{b.first}
}

func statsDelta(after, before cache.ResolverStats) cache.ResolverStats {
	return cache.ResolverStats{
		BlobsFetched: after.BlobsFetched - before.BlobsFetched,
		BytesFetched: after.BytesFetched - before.BytesFetched,
	}
}

func digestStrings(m map[string]v1.Hash) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v.String()
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// plural is "1 blob", "2 blobs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// shortDigest is "sha256:" and the first 12 hex digits, for tables.
func shortDigest(d string) string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return alg + ":" + hex[:12]
}
