package metrics_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/metrics"
)

// A layer cache's counters on a registry of the program's own, served by
// promhttp. Here the cache is in memory; a localfs.Store, s3.Cache or
// ocirepo.Cache is registered the same way.
func Example() {
	store, err := memory.NewLayerCache()
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewLayerCacheCollector("memory", store))

	ctx := context.Background()
	b := []byte("a layer")
	sum := sha256.Sum256(b)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if err := store.Put(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
		log.Fatal(err)
	}
	for range 3 {
		rc, err := store.Get(ctx, d)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
	}

	// What a Prometheus server scraping /metrics would read.
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "buildcache_layer_cache_hits_total") || strings.HasPrefix(line, "buildcache_layer_cache_served_bytes_total") {
			fmt.Println(line)
		}
	}
	// Output:
	// buildcache_layer_cache_hits_total{cache="memory"} 3
	// buildcache_layer_cache_served_bytes_total{cache="memory"} 21
}
