package crreader_test

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/crreader"
)

// A reconciler reads the Job it is about and a CRD object by name through
// a Reader, instead of the manager's cache (an informer per type, holding
// every Job of the cluster), and writes through the manager's client.
func Example() {
	var (
		cfg *rest.Config    // the manager's
		mgr manager.Manager // built from cfg
		ctx = context.Background()
	)
	repos := schema.GroupVersionResource{Group: "packages.glasskube.dev", Version: "v1alpha1", Resource: "packagerepositories"}
	kc, err := k8sclient.New(dynamic.NewForConfigOrDie(cfg),
		k8sclient.WithTTL(30*time.Second),          // Jobs: changes by others seen within 30s
		k8sclient.WithTTLFor(repos, 5*time.Minute), // a CRD that changes once a day
		k8sclient.WithWatch(repos))                 // and is dropped as soon as it does
	if err != nil {
		panic(err)
	}
	defer kc.Close()
	r, err := crreader.New(kc, mgr.GetScheme(), mgr.GetRESTMapper())
	if err != nil {
		panic(err)
	}

	var job batchv1.Job
	if err := r.Get(ctx, client.ObjectKey{Namespace: "ci", Name: "pi"}, &job); client.IgnoreNotFound(err) != nil {
		panic(err)
	}
	repo := &unstructured.Unstructured{}
	repo.SetAPIVersion("packages.glasskube.dev/v1alpha1")
	repo.SetKind("PackageRepository")
	if err := r.Get(ctx, client.ObjectKey{Name: "glasskube"}, repo); err != nil {
		panic(err)
	}

	// A write through the manager's client is not seen by kc's cache
	// until its TTL ends: drop the object at once.
	job.Labels["checked"] = "yes"
	if err := mgr.GetClient().Update(ctx, &job); err != nil {
		panic(err)
	}
	if err := r.Invalidate(&job); err != nil {
		panic(err)
	}
	fmt.Println(kc.Stats()[schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}].HitRatio())
}
