package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/registry"
)

// statsCounters are a cache's counters as stats prints them.
type statsCounters struct {
	Hits        uint64  `json:"hits"`
	Misses      uint64  `json:"misses"`
	BytesIn     uint64  `json:"bytes_in"`
	BytesOut    uint64  `json:"bytes_out"`
	Evictions   uint64  `json:"evictions"`
	Corruptions uint64  `json:"corruptions"`
	Errors      uint64  `json:"errors"`
	HitRatio    float64 `json:"hit_ratio"`
}

func countersOf(s cache.Stats) statsCounters {
	return statsCounters{s.Hits, s.Misses, s.BytesIn, s.BytesOut, s.Evictions, s.Corruptions, s.Errors, s.HitRatio()}
}

// resolverCounters are the resolvers' persisted counters.
type resolverCounters struct {
	Resolves     uint64 `json:"resolves"`
	Hits         uint64 `json:"hits"`
	Revalidated  uint64 `json:"revalidated"`
	Pulled       uint64 `json:"pulled"`
	Stale        uint64 `json:"stale"`
	Reserved     uint64 `json:"reserved"`
	BlobsFetched uint64 `json:"blobs_fetched"`
	BytesFetched uint64 `json:"bytes_fetched"`
}

type statsOutput struct {
	Cache    string            `json:"cache"`
	Dir      string            `json:"dir,omitempty"`
	Blobs    int               `json:"blobs"`
	Bytes    int64             `json:"bytes"`
	Images   *int              `json:"images,omitempty"` // nil: the cache keeps no roots
	Lifetime bool              `json:"lifetime"`
	Since    *time.Time        `json:"since,omitempty"`
	Reset    string            `json:"reset,omitempty"`
	Counters statsCounters     `json:"counters"`
	Resolver *resolverCounters `json:"resolver,omitempty"`
}

func (a *app) statsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show the cache's size and counters",
		Long: `Show the cache, its blob count and bytes, the images recorded, and its
counters. A local store (a directory, file://, or a tier's near tier)
keeps lifetime counters: what every process that used it counted (hits,
misses, bytes in and out, evictions, corruptions, errors) and what the
resolvers over it did (resolves, hits, revalidations, pulls, stale and
reserved answers, blobs and bytes fetched). Processes add to them every
few seconds and when they end, so a process killed may lose its last few
seconds. Other caches count only this process ("counters: this process"),
mostly zero here. With --json: {"cache", "dir", "blobs", "bytes",
"images", "lifetime", "since", "reset", "counters": {"hits", "misses",
"bytes_in", "bytes_out", "evictions", "corruptions", "errors",
"hit_ratio"}, "resolver": {"resolves", "hits", "revalidated", "pulled",
"stale", "reserved", "blobs_fetched", "bytes_fetched"}}.

` + seeExitCodes,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.openCache(ctx, true)
			if err != nil {
				return err
			}
			out := statsOutput{Cache: a.cacheName()}
			local, near, isLocal := localStore(c)
			if isLocal {
				out.Dir = local.Dir()
			}
			if err := c.Walk(ctx, func(_ v1.Hash, n int64) error {
				out.Blobs++
				out.Bytes += n
				return nil
			}); err != nil {
				return err
			}
			if index, ok := persistentRoots(c); ok {
				roots, err := recordedImages(ctx, index)
				if err != nil {
					return err
				}
				n := len(roots)
				out.Images = &n
			}
			if isLocal {
				l, err := local.Lifetime(ctx)
				if err != nil {
					return err
				}
				if l.Damaged {
					a.warnf("the lifetime counters were unreadable and start again from zero: %s", l.Reset)
				}
				if near {
					fmt.Fprintf(a.stderr, "stats: the lifetime counters are the near tier's\n")
				}
				out.Lifetime, out.Reset, out.Counters = true, l.Reset, countersOf(l.Stats)
				if !l.Since.IsZero() {
					out.Since = &l.Since
				}
				rs := registry.ResolverStatsFromCounters(l.Counters)
				out.Resolver = &resolverCounters{rs.Resolves, rs.Hits, rs.Revalidated, rs.Pulled, rs.Stale, rs.Reserved, rs.BlobsFetched, rs.BytesFetched}
			} else if sr, ok := c.(cache.StatsReporter); ok {
				out.Counters = countersOf(sr.Stats())
			}
			if a.json {
				return a.printJSON(out)
			}
			return a.printStats(out)
		}),
	}
}

func (a *app) printStats(out statsOutput) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "cache\t%s\n", out.Cache)
	if out.Dir != "" {
		fmt.Fprintf(tw, "dir\t%s\n", out.Dir)
	}
	fmt.Fprintf(tw, "blobs\t%d\n", out.Blobs)
	fmt.Fprintf(tw, "bytes\t%d (%s)\n", out.Bytes, humanize.IBytes(uint64(out.Bytes)))
	if out.Images != nil {
		fmt.Fprintf(tw, "images\t%d\n", *out.Images)
	} else {
		fmt.Fprintf(tw, "images\t- (the cache keeps no roots)\n")
	}
	switch {
	case !out.Lifetime:
		fmt.Fprintf(tw, "counters\tthis process (the cache keeps no lifetime counters)\n")
	case out.Since != nil:
		fmt.Fprintf(tw, "counters\tevery process since %s\n", out.Since.Format(time.RFC3339))
	default:
		fmt.Fprintf(tw, "counters\tevery process (none yet)\n")
	}
	if out.Reset != "" {
		fmt.Fprintf(tw, "reset\t%s\n", out.Reset)
	}
	c := out.Counters
	fmt.Fprintf(tw, "hits\t%d\nmisses\t%d\nhit ratio\t%.2f\nbytes in\t%d\nbytes out\t%d\nevictions\t%d\ncorruptions\t%d\nerrors\t%d\n",
		c.Hits, c.Misses, c.HitRatio, c.BytesIn, c.BytesOut, c.Evictions, c.Corruptions, c.Errors)
	if r := out.Resolver; r != nil {
		fmt.Fprintf(tw, "resolves\t%d\nresolver hits\t%d\nrevalidated\t%d\npulled\t%d\nstale\t%d\nreserved\t%d\nblobs fetched\t%d\nbytes fetched\t%d (%s)\n",
			r.Resolves, r.Hits, r.Revalidated, r.Pulled, r.Stale, r.Reserved, r.BlobsFetched, r.BytesFetched, humanize.IBytes(r.BytesFetched))
	}
	return tw.Flush()
}
