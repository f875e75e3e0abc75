package crreader_test

import (
	"errors"
	"os"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/crreader"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testserver.StopSharedKube()
	os.Exit(code)
}

var (
	jobsGVR    = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
	gadgetsGVR = schema.GroupVersionResource{Group: "crreader.test", Version: "v1", Resource: "gadgets"}
	gadgetGVK  = schema.GroupVersionKind{Group: "crreader.test", Version: "v1", Kind: "Gadget"}
)

// env is the shared API server, controller-runtime's own client (for
// writes), the scheme and RESTMapper a controller-runtime user has, and a
// namespace of the test's own.
type env struct {
	cfg    *rest.Config
	cr     client.Client
	scheme *runtime.Scheme
	mapper meta.RESTMapper
	ns     string
}

func newEnv(t *testing.T, ns string) *env {
	t.Helper()
	k := testserver.SharedKube(t)
	cfg := &rest.Config{
		Host: k.URL, BearerToken: k.Token(testserver.KubeAdmin),
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             200, Burst: 400, Timeout: 30 * time.Second,
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: mapper})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cfg: cfg, cr: cr, scheme: scheme, mapper: mapper, ns: ns}
	if err := cr.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return e
}

// reader returns a Reader over a new k8sclient.Client with opts.
func (e *env) reader(t *testing.T, opts ...k8sclient.Option) *crreader.Reader {
	t.Helper()
	kc, err := k8sclient.New(dynamic.NewForConfigOrDie(e.cfg), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	r, err := crreader.New(kc, e.scheme, e.mapper)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// installGadgets installs a namespaced CRD and waits until it is served.
func (e *env) installGadgets(t *testing.T) {
	t.Helper()
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "gadgets.crreader.test"},
		"spec": map[string]any{
			"group": "crreader.test",
			"scope": "Namespaced",
			"names": map[string]any{"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"spec": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true},
					},
				}},
			}},
		},
	}}
	if err := e.cr.Create(t.Context(), crd); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(e.cfg)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := dyn.Resource(gadgetsGVR).Namespace(e.ns).List(t.Context(), metav1.ListOptions{Limit: 1})
		if err == nil {
			// Served is not yet discovered: the mapper's discovery
			// document is updated after the resource is served.
			_, err = e.mapper.RESTMapping(schema.GroupKind{Group: gadgetsGVR.Group, Kind: "Gadget"}, gadgetsGVR.Version)
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gadgets CRD is not served after 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newJob(ns, name string, labels map[string]string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"true"}}},
		}}},
	}
}

func newGadget(ns, name string, labels map[string]string, color string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"color": color}}}
	u.SetGroupVersionKind(gadgetGVK)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(labels)
	return u
}

// A typed Job through the Reader: one GET, then hits; NotFound that
// client.IgnoreNotFound swallows, remembered; a List by label selector
// cached, a paged one not; a write through controller-runtime's client
// seen after Invalidate.
func TestRealTypedJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "crreader-typed")
	ctx := t.Context()
	for _, j := range []*batchv1.Job{
		newJob(e.ns, "pi", map[string]string{"app": "pi"}),
		newJob(e.ns, "other", map[string]string{"app": "other"}),
	} {
		if err := e.cr.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	r := e.reader(t, k8sclient.WithTTL(time.Hour))
	if gvr, err := r.GVR(&batchv1.Job{}); err != nil || gvr != jobsGVR {
		t.Fatalf("GVR(Job) = %v, %v", gvr, err)
	}
	key := client.ObjectKey{Namespace: e.ns, Name: "pi"}
	for range 5 {
		var j batchv1.Job
		if err := r.Get(ctx, key, &j); err != nil {
			t.Fatal(err)
		}
		if j.Name != "pi" || j.Labels["app"] != "pi" || len(j.Spec.Template.Spec.Containers) != 1 ||
			j.Spec.Template.Spec.Containers[0].Image != "busybox" {
			t.Fatalf("Get = %+v", j)
		}
	}
	if s := r.Client().Stats()[jobsGVR]; s.Requests != 1 || s.Misses != 1 || s.Hits != 4 {
		t.Fatalf("after 5 Gets: %d requests, %d misses, %d hits; want 1, 1, 4", s.Requests, s.Misses, s.Hits)
	}

	// A reused object keeps nothing of what it held.
	j := batchv1.Job{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"stale": "yes"}}}
	if err := r.Get(ctx, key, &j); err != nil || j.Annotations["stale"] != "" {
		t.Fatalf("Get into a used Job = %v, annotations %v", err, j.Annotations)
	}

	t.Run("not found", func(t *testing.T) {
		missing := client.ObjectKey{Namespace: e.ns, Name: "missing"}
		for range 3 {
			err := r.Get(ctx, missing, &batchv1.Job{})
			if !apierrors.IsNotFound(err) || client.IgnoreNotFound(err) != nil {
				t.Fatalf("Get missing = %v; want a NotFound", err)
			}
		}
		if s := r.Client().Stats()[jobsGVR]; s.NegativeHits != 2 {
			t.Fatalf("%d negative hits, want 2", s.NegativeHits)
		}
		err := r.Get(ctx, client.ObjectKey{Name: "pi"}, &batchv1.Job{})
		if !errors.Is(err, crreader.ErrNoNamespace) || apierrors.IsNotFound(err) {
			t.Fatalf("Get of a Job without a namespace = %v; want ErrNoNamespace, not a NotFound", err)
		}
	})

	t.Run("list", func(t *testing.T) {
		before := r.Client().Stats()[jobsGVR].Requests
		for range 3 {
			var l batchv1.JobList
			if err := r.List(ctx, &l, client.InNamespace(e.ns), client.MatchingLabels{"app": "pi"}); err != nil {
				t.Fatal(err)
			}
			if len(l.Items) != 1 || l.Items[0].Name != "pi" {
				t.Fatalf("List app=pi = %d items", len(l.Items))
			}
		}
		var all batchv1.JobList
		if err := r.List(ctx, &all, client.InNamespace(e.ns)); err != nil || len(all.Items) != 2 {
			t.Fatalf("List = %d items, %v; want 2", len(all.Items), err)
		}
		s := r.Client().Stats()[jobsGVR]
		if s.Requests-before != 2 {
			t.Fatalf("%d LISTs for 4 Lists of 2 selectors, want 2", s.Requests-before)
		}
		var page batchv1.JobList
		if err := r.List(ctx, &page, client.InNamespace(e.ns), client.Limit(1)); err != nil || len(page.Items) != 1 || page.Continue == "" {
			t.Fatalf("List Limit 1 = %d items, continue %q, %v", len(page.Items), page.Continue, err)
		}
		if u := r.Client().Stats()[jobsGVR].Uncached; u != s.Uncached+1 {
			t.Fatalf("a paged List was not sent as it is: Uncached %d, want %d", u, s.Uncached+1)
		}
	})

	t.Run("write through controller-runtime, then Invalidate", func(t *testing.T) {
		var j batchv1.Job
		if err := e.cr.Get(ctx, key, &j); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(j.DeepCopy())
		j.Labels["v"] = "2"
		if err := e.cr.Patch(ctx, &j, patch); err != nil {
			t.Fatal(err)
		}
		var got batchv1.Job
		if err := r.Get(ctx, key, &got); err != nil || got.Labels["v"] != "" {
			t.Fatalf("Get before Invalidate = %v, labels %v; want the cached Job", err, got.Labels)
		}
		if err := r.Invalidate(&j); err != nil {
			t.Fatal(err)
		}
		if err := r.Get(ctx, key, &got); err != nil || got.Labels["v"] != "2" {
			t.Fatalf("Get after Invalidate = %v, labels %v; want v=2", err, got.Labels)
		}
		var l batchv1.JobList
		if err := r.List(ctx, &l, client.InNamespace(e.ns), client.MatchingLabels{"v": "2"}); err != nil || len(l.Items) != 1 {
			t.Fatalf("List v=2 = %d items, %v", len(l.Items), err)
		}
	})
}

// An unstructured CRD object through a Reader whose Client watches the
// type: hits, a List by label selector, NotFound, metadata only, and a
// write through controller-runtime's client seen through the watch.
func TestRealUnstructuredCRD(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "crreader-unstructured")
	ctx := t.Context()
	e.installGadgets(t)
	for _, g := range []*unstructured.Unstructured{
		newGadget(e.ns, "g1", map[string]string{"tier": "gold"}, "red"),
		newGadget(e.ns, "g2", map[string]string{"tier": "gold"}, "blue"),
		newGadget(e.ns, "g3", map[string]string{"tier": "tin"}, "grey"),
	} {
		if err := e.cr.Create(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	r := e.reader(t, k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(gadgetsGVR))
	// Once open, the watch is what keeps the cache current: wait for it,
	// so that its start does not drop what the reads below count on.
	deadline := time.Now().Add(30 * time.Second)
	for !r.Client().Stats()[gadgetsGVR].Watching {
		if time.Now().After(deadline) {
			t.Fatalf("the watch did not open: %v", r.Client().Stats()[gadgetsGVR].WatchError)
		}
		time.Sleep(20 * time.Millisecond)
	}
	key := client.ObjectKey{Namespace: e.ns, Name: "g1"}
	get := func() *unstructured.Unstructured {
		t.Helper()
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gadgetGVK)
		if err := r.Get(ctx, key, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	for range 4 {
		u := get()
		if c, _, _ := unstructured.NestedString(u.Object, "spec", "color"); c != "red" || u.GetName() != "g1" {
			t.Fatalf("Get g1 = %v", u.Object)
		}
		u.Object["spec"] = "changed by the caller" // a copy: the cache keeps its own
	}
	if s := r.Client().Stats()[gadgetsGVR]; s.Requests != 1 || s.Misses != 1 || s.Hits != 3 {
		t.Fatalf("after 4 Gets: %d requests, %d misses, %d hits; want 1, 1, 3", s.Requests, s.Misses, s.Hits)
	}

	var l unstructured.UnstructuredList
	l.SetGroupVersionKind(gadgetGVK.GroupVersion().WithKind("GadgetList"))
	for range 2 {
		if err := r.List(ctx, &l, client.InNamespace(e.ns), client.MatchingLabels{"tier": "gold"}); err != nil {
			t.Fatal(err)
		}
		if len(l.Items) != 2 || l.GetKind() != "GadgetList" {
			t.Fatalf("List tier=gold = %d items of kind %q, want 2 GadgetList", len(l.Items), l.GetKind())
		}
	}

	missing := &unstructured.Unstructured{}
	missing.SetGroupVersionKind(gadgetGVK)
	if err := r.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "nope"}, missing); !apierrors.IsNotFound(err) || client.IgnoreNotFound(err) != nil {
		t.Fatalf("Get nope = %v; want a NotFound", err)
	}

	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(gadgetGVK)
	if err := r.Get(ctx, key, meta); err != nil || meta.Labels["tier"] != "gold" {
		t.Fatalf("Get metadata of g1 = %v, labels %v", err, meta.Labels)
	}
	if s := r.Client().Stats()[gadgetsGVR]; s.Requests != 3 {
		t.Fatalf("%d requests, want 3 (g1, the List, nope)", s.Requests)
	}

	// The watch drops g1 when controller-runtime's client changes it.
	g := get()
	g.Object["spec"] = map[string]any{"color": "green"}
	if err := e.cr.Update(ctx, g); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		if c, _, _ := unstructured.NestedString(get().Object, "spec", "color"); c == "green" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the update was not seen through the watch within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := r.Client().Stats()[gadgetsGVR]; s.WatchEvents == 0 || s.Invalidations == 0 {
		t.Fatalf("seen without a watch event? %+v", s)
	}
	if err := r.List(ctx, &l, client.InNamespace(e.ns), client.MatchingLabels{"tier": "gold"}); err != nil {
		t.Fatal(err)
	}
	for _, it := range l.Items {
		if c, _, _ := unstructured.NestedString(it.Object, "spec", "color"); it.GetName() == "g1" && c != "green" {
			t.Fatalf("List after the watch event has g1 %s", c)
		}
	}
}
