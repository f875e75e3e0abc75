package k8sclient_test

import (
	"context"
	"fmt"
	"log"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

// Glasskube's case: a PackageRepository read on every step of an install
// costs one request per TTL instead of one per read. The API server here
// is k8stest's double; with a real cluster, cfg comes from clientcmd.
func Example() {
	srv := k8stest.NewServer()
	defer srv.Close()
	srv.Create(k8stest.PackageRepositoriesGVR, k8stest.NewPackageRepository("glasskube", "https://packages.dl.glasskube.dev/packages"))
	cfg := srv.Config()

	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		log.Fatal(err)
	}
	c, err := k8sclient.New(dyn, k8sclient.WithTTLFor(k8stest.PackageRepositoriesGVR, 5*time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	var url string
	for range 100 {
		repo, err := c.Get(ctx, k8stest.PackageRepositoriesGVR, "", "glasskube")
		if err != nil {
			log.Fatal(err)
		}
		url, _, _ = unstructured.NestedString(repo.Object, "spec", "url")
	}
	s := c.Stats()[k8stest.PackageRepositoriesGVR]
	fmt.Println(url)
	fmt.Printf("100 Gets: %d request, %d answered from memory\n", srv.Count("get", "packagerepositories"), s.Hits)

	// Before acting on it, read it fresh.
	if _, err := c.Get(ctx, k8stest.PackageRepositoriesGVR, "", "glasskube", k8sclient.Fresh()); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("and a Fresh Get: %d requests\n", srv.Count("get", "packagerepositories"))
	// Output:
	// https://packages.dl.glasskube.dev/packages
	// 100 Gets: 1 request, 99 answered from memory
	// and a Fresh Get: 2 requests
}

// DolphinScheduler's case: whether a Job exists is one GET by name (404
// means no), never a LIST of every Job in the namespace.
func ExampleClient_JobExists() {
	srv := k8stest.NewServer()
	defer srv.Close()
	for i := range 1000 {
		srv.Create(k8stest.JobsGVR, k8stest.NewJob("scheduler", fmt.Sprintf("task-%d", i), nil))
	}
	dyn, err := dynamic.NewForConfig(srv.Config())
	if err != nil {
		log.Fatal(err)
	}
	c, err := k8sclient.New(dyn)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	for _, name := range []string{"task-42", "task-4242"} {
		ok, err := c.JobExists(ctx, "scheduler", name)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s exists: %v\n", name, ok)
	}
	fmt.Printf("GETs %d, LISTs %d\n", srv.Count("get", "jobs"), srv.Count("list", "jobs"))
	// Output:
	// task-42 exists: true
	// task-4242 exists: false
	// GETs 2, LISTs 0
}

// A typed clientset's Jobs, cached: Go infers the types from the method
// value.
func ExampleNewTyped() {
	srv := k8stest.NewServer()
	defer srv.Close()
	srv.Create(k8stest.JobsGVR, k8stest.NewJob("scheduler", "flink-42", map[string]string{"team": "data"}))
	clientset, err := kubernetes.NewForConfig(srv.Config())
	if err != nil {
		log.Fatal(err)
	}

	jobs, err := k8sclient.NewTyped(clientset.BatchV1().Jobs, k8sclient.WithTTL(time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	defer jobs.Close()
	ctx := context.Background()
	for range 3 {
		job, err := jobs.Get(ctx, "scheduler", "flink-42") // a *batchv1.Job, the caller's copy
		if err != nil {
			log.Fatal(err)
		}
		job.Labels["team"] = "changed here only"
	}
	l, err := jobs.List(ctx, "scheduler", metav1.ListOptions{LabelSelector: "team=data"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d Job with team=data; requests: %d GET, %d LIST\n", len(l.Items), srv.Count("get", "jobs"), srv.Count("list", "jobs"))
	// Output:
	// 1 Job with team=data; requests: 1 GET, 1 LIST
}
