package k8smetrics_test

import (
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
	"github.com/buildcache/buildcache/metrics/k8smetrics"
)

func TestResourceLabel(t *testing.T) {
	for gvr, want := range map[schema.GroupVersionResource]string{
		k8stest.JobsGVR:                   "batch/v1/jobs",
		{Version: "v1", Resource: "pods"}: "v1/pods",
		k8stest.PackageRepositoriesGVR:    "packages.glasskube.dev/v1alpha1/packagerepositories",
	} {
		if got := k8smetrics.ResourceLabel(gvr); got != want {
			t.Errorf("ResourceLabel(%v) = %q, want %q", gvr, got, want)
		}
	}
}

// Three Gets of a PackageRepository (one request, two hits), two
// Exists of a Job that is not there (one 404, then a remembered one).
func TestClientCollector(t *testing.T) {
	srv := k8stest.NewServer()
	t.Cleanup(srv.Close)
	srv.Create(k8stest.PackageRepositoriesGVR, k8stest.NewPackageRepository("glasskube", "https://packages.dl.glasskube.dev/packages"))
	dyn, err := dynamic.NewForConfig(srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	c, err := k8sclient.New(dyn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := t.Context()
	for range 3 {
		if _, err := c.Get(ctx, k8stest.PackageRepositoriesGVR, "", "glasskube"); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if ok, err := c.JobExists(ctx, "scheduler", "nope"); err != nil || ok {
			t.Fatalf("JobExists = %v, %v", ok, err)
		}
	}

	want := `
# HELP buildcache_k8sclient_hits_total Reads answered from memory with an object or a List.
# TYPE buildcache_k8sclient_hits_total counter
buildcache_k8sclient_hits_total{client="operator",resource="batch/v1/jobs"} 0
buildcache_k8sclient_hits_total{client="operator",resource="packages.glasskube.dev/v1alpha1/packagerepositories"} 2
# HELP buildcache_k8sclient_misses_total Reads (without Fresh) that found nothing fresh, including those that waited for another caller's request.
# TYPE buildcache_k8sclient_misses_total counter
buildcache_k8sclient_misses_total{client="operator",resource="batch/v1/jobs"} 1
buildcache_k8sclient_misses_total{client="operator",resource="packages.glasskube.dev/v1alpha1/packagerepositories"} 1
# HELP buildcache_k8sclient_negative_hits_total Reads answered from memory with a remembered 404.
# TYPE buildcache_k8sclient_negative_hits_total counter
buildcache_k8sclient_negative_hits_total{client="operator",resource="batch/v1/jobs"} 1
buildcache_k8sclient_negative_hits_total{client="operator",resource="packages.glasskube.dev/v1alpha1/packagerepositories"} 0
# HELP buildcache_k8sclient_request_errors_total Requests for reads that failed, 404s included.
# TYPE buildcache_k8sclient_request_errors_total counter
buildcache_k8sclient_request_errors_total{client="operator",resource="batch/v1/jobs"} 1
buildcache_k8sclient_request_errors_total{client="operator",resource="packages.glasskube.dev/v1alpha1/packagerepositories"} 0
# HELP buildcache_k8sclient_requests_total GETs and LISTs sent to the API server for reads, whatever their outcome.
# TYPE buildcache_k8sclient_requests_total counter
buildcache_k8sclient_requests_total{client="operator",resource="batch/v1/jobs"} 1
buildcache_k8sclient_requests_total{client="operator",resource="packages.glasskube.dev/v1alpha1/packagerepositories"} 1
# HELP buildcache_k8sclient_watching 1 while a watch of the resource type is open, else 0.
# TYPE buildcache_k8sclient_watching gauge
buildcache_k8sclient_watching{client="operator",resource="batch/v1/jobs"} 0
buildcache_k8sclient_watching{client="operator",resource="packages.glasskube.dev/v1alpha1/packagerepositories"} 0
`
	col := k8smetrics.NewClientCollector("operator", c)
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"buildcache_k8sclient_hits_total", "buildcache_k8sclient_misses_total", "buildcache_k8sclient_negative_hits_total",
		"buildcache_k8sclient_request_errors_total", "buildcache_k8sclient_requests_total", "buildcache_k8sclient_watching"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(col); n != 2*14 {
		t.Errorf("%d series, want 14 families for each of 2 resource types", n)
	}
	if srv.Count("get", "packagerepositories") != 1 {
		t.Errorf("%d GETs of packagerepositories, want 1", srv.Count("get", "packagerepositories"))
	}
}

func TestK8sTypedCollector(t *testing.T) {
	srv := k8stest.NewServer()
	t.Cleanup(srv.Close)
	srv.Create(k8stest.JobsGVR, k8stest.NewJob("scheduler", "flink-42", nil))
	cs, err := kubernetes.NewForConfig(srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := k8sclient.NewTyped(cs.BatchV1().Jobs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Close)
	for range 4 {
		if _, err := jobs.Get(t.Context(), "scheduler", "flink-42"); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP buildcache_k8sclient_hits_total Reads answered from memory with an object or a List.
# TYPE buildcache_k8sclient_hits_total counter
buildcache_k8sclient_hits_total{client="jobs",resource="batch/v1/jobs"} 3
# HELP buildcache_k8sclient_requests_total GETs and LISTs sent to the API server for reads, whatever their outcome.
# TYPE buildcache_k8sclient_requests_total counter
buildcache_k8sclient_requests_total{client="jobs",resource="batch/v1/jobs"} 1
`
	col := k8smetrics.NewTypedCollector("jobs", batchv1.SchemeGroupVersion.WithResource("jobs"), jobs)
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"buildcache_k8sclient_hits_total", "buildcache_k8sclient_requests_total"); err != nil {
		t.Error(err)
	}
}
