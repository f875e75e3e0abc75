package metrics_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/metrics"
	"github.com/buildcache/buildcache/tier"
)

func blob(s string) (v1.Hash, []byte) {
	sum := sha256.Sum256([]byte(s))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, []byte(s)
}

func put(t *testing.T, c cache.LayerCache, s string) v1.Hash {
	t.Helper()
	d, b := blob(s)
	if err := c.Put(t.Context(), d, int64(len(b)), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	return d
}

// get reads d through c; a missing blob is not an error.
func get(t *testing.T, c cache.LayerCache, d v1.Hash) {
	t.Helper()
	rc, err := c.Get(t.Context(), d)
	if errors.Is(err, cache.ErrNotFound) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
}

// drive puts two blobs (5 and 6 bytes), reads the first twice and a
// missing one once: 2 hits, 1 miss, 11 bytes in, 10 out.
func drive(t *testing.T, c cache.LayerCache) {
	t.Helper()
	a := put(t, c, "hello")
	put(t, c, "world!")
	get(t, c, a)
	get(t, c, a)
	missing, _ := blob("nowhere")
	get(t, c, missing)
}

const layerCacheFamilies = `
# HELP buildcache_layer_cache_corruptions_total Entries found not to match their digest or size, and removed.
# TYPE buildcache_layer_cache_corruptions_total counter
buildcache_layer_cache_corruptions_total{cache="%[1]s"} 0
# HELP buildcache_layer_cache_errors_total Operations that failed for another reason than a miss (I/O, remote).
# TYPE buildcache_layer_cache_errors_total counter
buildcache_layer_cache_errors_total{cache="%[1]s"} 0
# HELP buildcache_layer_cache_evictions_total Entries removed to make room or because they expired.
# TYPE buildcache_layer_cache_evictions_total counter
buildcache_layer_cache_evictions_total{cache="%[1]s"} 0
# HELP buildcache_layer_cache_hits_total Lookups the cache answered.
# TYPE buildcache_layer_cache_hits_total counter
buildcache_layer_cache_hits_total{cache="%[1]s"} 2
# HELP buildcache_layer_cache_misses_total Lookups the cache could not answer.
# TYPE buildcache_layer_cache_misses_total counter
buildcache_layer_cache_misses_total{cache="%[1]s"} 1
# HELP buildcache_layer_cache_served_bytes_total Bytes served from the cache.
# TYPE buildcache_layer_cache_served_bytes_total counter
buildcache_layer_cache_served_bytes_total{cache="%[1]s"} 10
# HELP buildcache_layer_cache_written_bytes_total Bytes written into the cache.
# TYPE buildcache_layer_cache_written_bytes_total counter
buildcache_layer_cache_written_bytes_total{cache="%[1]s"} 11
`

func TestLayerCacheCollector(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) cache.LayerCache
	}{
		{"memory", func(t *testing.T) cache.LayerCache {
			c, err := memory.NewLayerCache()
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"localfs", func(t *testing.T) cache.LayerCache {
			s, err := localfs.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.open(t)
			drive(t, c)
			col := metrics.NewLayerCacheCollector(tc.name, c.(cache.StatsReporter))
			want := fmt.Sprintf(layerCacheFamilies, tc.name)
			if err := testutil.CollectAndCompare(col, strings.NewReader(want)); err != nil {
				t.Error(err)
			}
		})
	}
}

// A tier of two memory caches: two blobs put through the tier reach both
// tiers, one more only the far one; reading the first from the tier is a
// near hit, reading the far-only one a far hit that fills the near tier.
func TestTierCollector(t *testing.T) {
	near, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	far, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tier.New(near, far)
	if err != nil {
		t.Fatal(err)
	}
	drive(t, tc)
	farOnly := put(t, far, "far away")
	get(t, tc, farOnly)

	// Each tier's own counters count the tier's work too: the near tier
	// served each blob put once more for the copy to the far one (4
	// hits); the far tier was asked only Stat for the missing blob, which
	// a memory cache does not count as a miss.
	col := metrics.NewTierCollector("ci", tc)
	want := `
# HELP buildcache_layer_cache_hits_total Lookups the cache answered.
# TYPE buildcache_layer_cache_hits_total counter
buildcache_layer_cache_hits_total{cache="ci"} 3
# HELP buildcache_layer_cache_misses_total Lookups the cache could not answer.
# TYPE buildcache_layer_cache_misses_total counter
buildcache_layer_cache_misses_total{cache="ci"} 1
# HELP buildcache_tier_fills_total Blobs read from the far tier and copied into the near tier.
# TYPE buildcache_tier_fills_total counter
buildcache_tier_fills_total{cache="ci"} 1
# HELP buildcache_tier_far_errors_total Far tier failures the tiered cache absorbed while the near tier went on.
# TYPE buildcache_tier_far_errors_total counter
buildcache_tier_far_errors_total{cache="ci"} 0
# HELP buildcache_tier_gets_served_total Gets of the tiered cache served by each tier.
# TYPE buildcache_tier_gets_served_total counter
buildcache_tier_gets_served_total{cache="ci",tier="far"} 1
buildcache_tier_gets_served_total{cache="ci",tier="near"} 2
# HELP buildcache_tier_hits_total Lookups the cache answered.
# TYPE buildcache_tier_hits_total counter
buildcache_tier_hits_total{cache="ci",tier="far"} 1
buildcache_tier_hits_total{cache="ci",tier="near"} 4
# HELP buildcache_tier_misses_total Lookups the cache could not answer.
# TYPE buildcache_tier_misses_total counter
buildcache_tier_misses_total{cache="ci",tier="far"} 0
buildcache_tier_misses_total{cache="ci",tier="near"} 2
# HELP buildcache_tier_written_bytes_total Bytes written into the cache.
# TYPE buildcache_tier_written_bytes_total counter
buildcache_tier_written_bytes_total{cache="ci",tier="far"} 19
buildcache_tier_written_bytes_total{cache="ci",tier="near"} 19
`
	names := []string{
		"buildcache_layer_cache_hits_total", "buildcache_layer_cache_misses_total",
		"buildcache_tier_fills_total", "buildcache_tier_far_errors_total", "buildcache_tier_gets_served_total",
		"buildcache_tier_hits_total", "buildcache_tier_misses_total", "buildcache_tier_written_bytes_total",
	}
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Every family: the seven of the whole cache, seven per tier, fills,
	// far errors, far calls skipped and the Gets each tier served.
	if n := testutil.CollectAndCount(col); n != 7+2*7+1+1+1+2 {
		t.Errorf("%d series, want %d", n, 7+2*7+1+1+1+2)
	}
}

// A scrape reads one Stats snapshot and nothing else.
func TestCollectReadsStatsOncePerScrape(t *testing.T) {
	var c countingReporter
	col := metrics.NewLayerCacheCollector("x", &c)
	for range 3 {
		testutil.CollectAndCount(col)
	}
	if c.calls != 3 {
		t.Errorf("Stats called %d times for 3 scrapes, want 3", c.calls)
	}
}

type countingReporter struct{ calls int }

func (c *countingReporter) Stats() cache.Stats { c.calls++; return cache.Stats{Hits: uint64(c.calls)} }
