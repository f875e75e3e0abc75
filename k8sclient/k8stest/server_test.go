package k8stest_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

func clients(t *testing.T) (*k8stest.Server, dynamic.Interface, kubernetes.Interface) {
	t.Helper()
	srv := k8stest.NewServer()
	t.Cleanup(srv.Close)
	return srv, dynamic.NewForConfigOrDie(srv.Config()), kubernetes.NewForConfigOrDie(srv.Config())
}

// Typed clients get protobuf for built-in types, as from kube-apiserver;
// the dynamic client gets JSON; both round-trip writes.
func TestTypedAndDynamicClients(t *testing.T) {
	srv, dyn, cs := clients(t)
	ctx := t.Context()
	job := k8stest.NewJob("default", "pi", map[string]string{"a": "1"})
	if _, err := dyn.Resource(k8stest.JobsGVR).Namespace("default").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	j, err := cs.BatchV1().Jobs("default").Get(ctx, "pi", metav1.GetOptions{})
	if err != nil || j.Labels["a"] != "1" || j.Status.Succeeded != 1 || j.UID == "" || j.ResourceVersion == "" || len(j.ManagedFields) == 0 {
		t.Fatalf("typed Get = %+v, %v", j, err)
	}
	j.Labels["a"] = "2"
	if j, err = cs.BatchV1().Jobs("default").Update(ctx, j, metav1.UpdateOptions{}); err != nil || j.Labels["a"] != "2" {
		t.Fatalf("typed Update = %v, %v", j, err)
	}
	j.ResourceVersion = "1"
	if _, err := cs.BatchV1().Jobs("default").Update(ctx, j, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("Update with a stale resourceVersion: %v", err)
	}
	if _, err := cs.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("Create of an existing Job: %v", err)
	}
	u, err := dyn.Resource(k8stest.JobsGVR).Namespace("default").Patch(ctx, "pi", types.MergePatchType, []byte(`{"metadata":{"labels":{"a":null,"b":"3"}}}`), metav1.PatchOptions{})
	if err != nil || u.GetLabels()["b"] != "3" || u.GetLabels()["a"] != "" {
		t.Fatalf("merge Patch = %v, %v", u, err)
	}
	if err := cs.BatchV1().Jobs("default").Delete(ctx, "pi", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.BatchV1().Jobs("default").Get(ctx, "pi", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Get after Delete: %v", err)
	}

	// Raw: which format each client was answered in.
	srv.Create(k8stest.JobsGVR, job)
	for accept, want := range map[string]string{
		"application/vnd.kubernetes.protobuf,application/json": "application/vnd.kubernetes.protobuf",
		"application/json": "application/json",
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/apis/batch/v1/namespaces/default/jobs/pi", nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Type"); got != want {
			t.Errorf("Accept %s: answered %s, want %s", accept, got, want)
		}
	}
}

func TestListPagesAndSelectors(t *testing.T) {
	srv, dyn, cs := clients(t)
	ctx := t.Context()
	for i := range 5 {
		srv.Create(k8stest.JobsGVR, k8stest.NewJob("a", fmt.Sprintf("j%d", i), map[string]string{"odd": fmt.Sprint(i%2 == 1)}))
	}
	srv.Create(k8stest.JobsGVR, k8stest.NewJob("b", "other", nil))
	var names []string
	opts := metav1.ListOptions{Limit: 2}
	for {
		l, err := cs.BatchV1().Jobs("a").List(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range l.Items {
			names = append(names, it.Name)
		}
		if l.Continue == "" {
			break
		}
		opts.Continue = l.Continue
	}
	if fmt.Sprint(names) != "[j0 j1 j2 j3 j4]" {
		t.Errorf("pages = %v", names)
	}
	for sel, want := range map[string]int{"odd=true": 2, "odd!=true": 4, "": 6} {
		l, err := dyn.Resource(k8stest.JobsGVR).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil || len(l.Items) != want {
			t.Errorf("List(%q) = %d items, %v; want %d", sel, len(l.Items), err, want)
		}
	}
	l, err := dyn.Resource(k8stest.JobsGVR).List(ctx, metav1.ListOptions{FieldSelector: "metadata.namespace=b"})
	if err != nil || len(l.Items) != 1 {
		t.Errorf("List by namespace field = %v, %v", l, err)
	}
	if _, err := dyn.Resource(k8stest.JobsGVR).List(ctx, metav1.ListOptions{FieldSelector: "status.succeeded=1"}); !apierrors.IsBadRequest(err) {
		t.Errorf("unsupported field selector: %v", err)
	}
	if srv.Count(k8stest.VerbList, "jobs") != 8 { // three pages, five Lists
		t.Errorf("Count = %d", srv.Count(k8stest.VerbList, "jobs"))
	}
}

func TestWatch(t *testing.T) {
	srv, dyn, _ := clients(t)
	ctx := t.Context()
	srv.Create(k8stest.PackageRepositoriesGVR, k8stest.NewPackageRepository("a", "https://a"))
	rv := srv.ResourceVersion()
	srv.Create(k8stest.PackageRepositoriesGVR, k8stest.NewPackageRepository("b", "https://b"))
	w, err := dyn.Resource(k8stest.PackageRepositoriesGVR).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	ev := <-w.ResultChan()
	if ev.Type != watch.Added || name(ev) != "b" {
		t.Fatalf("first event %s %s; want ADDED b (the one after the resourceVersion)", ev.Type, name(ev))
	}
	srv.Delete(k8stest.PackageRepositoriesGVR, "", "a")
	if ev := <-w.ResultChan(); ev.Type != watch.Deleted || name(ev) != "a" {
		t.Fatalf("event %s %s; want DELETED a", ev.Type, name(ev))
	}
	srv.CloseWatches()
	if _, ok := <-w.ResultChan(); ok {
		t.Fatal("the watch is still open after CloseWatches")
	}

	srv.Compact()
	w, err = dyn.Resource(k8stest.PackageRepositoriesGVR).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	ev = <-w.ResultChan()
	if err := apierrors.FromObject(ev.Object); ev.Type != watch.Error || !apierrors.IsResourceExpired(err) {
		t.Fatalf("watch from a compacted resourceVersion: %s %v; want an ERROR 410", ev.Type, err)
	}
	w.Stop()
}

func name(ev watch.Event) string {
	if m, ok := ev.Object.(metav1.Object); ok {
		return m.GetName()
	}
	return fmt.Sprintf("%T", ev.Object)
}

// An informer syncs against the double (streaming list or list, then
// watch) and sees changes.
func TestInformer(t *testing.T) {
	srv, dyn, _ := clients(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv.Create(k8stest.JobsGVR, k8stest.NewJob("a", "x", nil))
	f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	inf := f.ForResource(k8stest.JobsGVR)
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		t.Fatal("informer did not sync")
	}
	if _, err := inf.Lister().ByNamespace("a").Get("x"); err != nil {
		t.Fatal(err)
	}
	srv.Create(k8stest.JobsGVR, k8stest.NewJob("a", "y", nil))
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := inf.Lister().ByNamespace("a").Get("y"); err == nil {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the informer did not see y")
		case <-tick.C:
		}
	}
	cancel()
}

func TestFaultsAndRBAC(t *testing.T) {
	srv, _, cs := clients(t)
	ctx := t.Context()
	srv.Create(k8stest.JobsGVR, k8stest.NewJob("a", "x", nil))
	remove := srv.Inject(k8stest.Fault{Verb: k8stest.VerbGet, Code: http.StatusInternalServerError, Times: 1})
	if _, err := cs.BatchV1().Jobs("a").Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsInternalError(err) {
		t.Errorf("first Get: %v", err)
	}
	if _, err := cs.BatchV1().Jobs("a").Get(ctx, "x", metav1.GetOptions{}); err != nil {
		t.Errorf("second Get (Times: 1 used up): %v", err)
	}
	remove()
	srv.Inject(k8stest.Fault{Resource: "jobs", Name: "x", Code: http.StatusNotFound})
	if _, err := cs.BatchV1().Jobs("a").Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Get with a 404 fault: %v", err)
	}
	srv.Allow(k8stest.VerbGet)
	if _, err := cs.BatchV1().Jobs("a").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("List with only get allowed: %v", err)
	}
	if got := srv.Count("", "jobs"); got != 4 {
		t.Errorf("Count = %d, want 4", got)
	}
}
