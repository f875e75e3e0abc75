package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/dynamic"

	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/metrics"
	"github.com/buildcache/buildcache/metrics/k8smetrics"
	"github.com/buildcache/buildcache/tier"
)

// allCollectors returns one collector of each kind, over backends that
// have done a little work, registered on a pedantic registry (which
// checks that every metric matches its descriptor).
func allCollectors(t *testing.T) *prometheus.Registry {
	t.Helper()
	resolver, store := resolveThreeWays(t)

	near, _ := memory.NewLayerCache()
	far, _ := memory.NewLayerCache()
	tc, err := tier.New(near, far)
	if err != nil {
		t.Fatal(err)
	}
	drive(t, tc)

	rc, err := memory.New[string, string]()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	rc.Get(t.Context(), "k", func(context.Context) (string, error) { return "v", nil })

	srv := k8stest.NewServer()
	t.Cleanup(srv.Close)
	dyn, err := dynamic.NewForConfig(srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	kc, err := k8sclient.New(dyn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	if _, err := kc.JobExists(t.Context(), "ns", "j"); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(
		metrics.NewResolverCollector(resolver),
		metrics.NewLayerCacheCollector("localfs", store),
		metrics.NewTierCollector("ci", tc),
		metrics.NewResourceCacheCollector("values", rc),
		k8smetrics.NewClientCollector("operator", kc),
	)
	return reg
}

func TestLint(t *testing.T) {
	problems, err := testutil.GatherAndLint(allCollectors(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// The same name twice on one registry is refused, not silently merged.
func TestSameNameTwice(t *testing.T) {
	c, _ := memory.NewLayerCache()
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewLayerCacheCollector("a", c))
	err := reg.Register(metrics.NewLayerCacheCollector("a", c))
	if !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		t.Errorf("second registration: %v, want an AlreadyRegisteredError", err)
	}
	if err := reg.Register(metrics.NewLayerCacheCollector("b", c)); err != nil {
		t.Errorf("another name: %v", err)
	}
}

// A real promhttp handler over HTTP serves every family.
func TestScrape(t *testing.T) {
	reg := allCollectors(t)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", resp.Status, body)
	}
	text := string(body)
	for _, line := range []string{
		`buildcache_resolver_resolves_total 3`,
		`buildcache_resolver_resolutions_total{source="pulled"} 1`,
		`# TYPE buildcache_resolver_fetched_bytes_total counter`,
		`# TYPE buildcache_layer_cache_hits_total counter`,
		`buildcache_layer_cache_hits_total{cache="ci"} 2`,
		`# TYPE buildcache_layer_cache_written_bytes_total counter`,
		`buildcache_tier_gets_served_total{cache="ci",tier="near"} 2`,
		`buildcache_tier_hits_total{cache="ci",tier="far"}`,
		`buildcache_resource_cache_loads_total{cache="values"} 1`,
		`buildcache_k8sclient_requests_total{client="operator",resource="batch/v1/jobs"} 1`,
		`# TYPE buildcache_k8sclient_watching gauge`,
	} {
		if !strings.Contains(text, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
	// The localfs store served the resolver: it wrote what was pulled.
	if got := gatherValue(t, reg, "buildcache_layer_cache_written_bytes_total", map[string]string{"cache": "localfs"}); got < 2*1024 {
		t.Errorf("localfs written bytes = %v, want at least the 2 KiB of layers pulled", got)
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", text)
	}
}
