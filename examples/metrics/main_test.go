package main

import (
	"bytes"
	"strings"
	"testing"
)

// The program resolves, serves /metrics, scrapes it once and exits; every
// kind of collector must show up with the values the steps imply.
func TestMetrics(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), &out, t.TempDir(), "127.0.0.1:0"); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	for _, want := range []string{
		"resolve cold                  pulled",
		"resolve warm, always          revalidated",
		"resolve warm, if-not-present  hit",
		"# TYPE buildcache_resolver_resolves_total counter",
		`buildcache_resolver_resolves_total 4`,
		`buildcache_resolver_resolutions_total{source="hit"} 2`,
		`buildcache_resolver_resolutions_total{source="pulled"} 1`,
		`buildcache_resolver_resolutions_total{source="revalidated"} 1`,
		`buildcache_layer_cache_hits_total{cache="runner-1"}`,
		`buildcache_tier_gets_served_total{cache="runner-1",tier="near"}`,
		`buildcache_tier_written_bytes_total{cache="runner-1",tier="far"}`,
		`buildcache_tier_gets_served_total{cache="runner-2",tier="near"} 0`,
		`buildcache_layer_cache_misses_total{cache="runner-2"} 0`,
		`buildcache_resource_cache_hits_total{cache="digests"} 4`,
		`buildcache_resource_cache_loads_total{cache="digests"} 1`,
		`buildcache_k8sclient_hits_total{client="operator",resource="packages.glasskube.dev/v1alpha1/packagerepositories"} 9`,
		`buildcache_k8sclient_requests_total{client="operator",resource="packages.glasskube.dev/v1alpha1/packagerepositories"} 1`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
