package k8sclient_test

// Helpers of the tests against a real kube-apiserver and etcd
// (internal/testserver.SharedKube, started once per test binary and
// stopped by TestMain). Each test works in a namespace of its own.

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/k8sclient"
)

// widgets is a cluster-scoped CRD the real-server tests install once.
var widgets = schema.GroupVersionResource{Group: "buildcache.test", Version: "v1", Resource: "widgets"}

var crdOnce struct {
	sync.Once
	err error
}

var nsSeq atomic.Int64

// realEnv is the shared API server, admin clients for it, and a
// namespace of the test's own.
type realEnv struct {
	k     *testserver.Kube
	admin dynamic.Interface
	cs    kubernetes.Interface
	ns    string
}

func newRealEnv(t *testing.T) *realEnv {
	t.Helper()
	k := testserver.SharedKube(t)
	e := &realEnv{k: k}
	cfg := e.config(testserver.KubeAdmin)
	var err error
	if e.admin, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if e.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	crdOnce.Do(func() { crdOnce.err = e.installWidgets(t) })
	if crdOnce.err != nil {
		t.Fatalf("installing the widgets CRD: %v", crdOnce.err)
	}
	e.ns = fmt.Sprintf("t%d-%s", nsSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(e.ns) > 63 {
		e.ns = strings.TrimRight(e.ns[:63], "-")
	}
	if _, err := e.cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// config is a rest.Config for user, with a rate limit that does not slow
// the tests down (the cache's requests are counted in Stats instead).
func (e *realEnv) config(user string) *rest.Config {
	return &rest.Config{
		Host:            e.k.URL,
		BearerToken:     e.k.Token(user),
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             200,
		Burst:           400,
		Timeout:         30 * time.Second,
	}
}

func (e *realEnv) dynamicFor(t *testing.T, user string) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(e.config(user))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// client returns a Client of user's, closed when the test ends.
func (e *realEnv) client(t *testing.T, user string, opts ...k8sclient.Option) *k8sclient.Client {
	t.Helper()
	c, err := k8sclient.New(e.dynamicFor(t, user), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (e *realEnv) installWidgets(t *testing.T) error {
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "widgets.buildcache.test"},
		"spec": map[string]any{
			"group": "buildcache.test",
			"scope": "Cluster",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
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
	crds := e.admin.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if _, err := crds.Create(t.Context(), crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		u, err := crds.Get(t.Context(), "widgets.buildcache.test", metav1.GetOptions{})
		if err == nil && established(u) {
			// Established is set before every apiserver handler serves the
			// type; wait until a list works.
			if _, err := e.admin.Resource(widgets).List(t.Context(), metav1.ListOptions{Limit: 1}); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the CRD is not established after 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// widget creates a Widget named name (prefixed by the test's namespace,
// since Widgets are cluster-scoped) with label v=v, and returns its name.
func (e *realEnv) widget(t *testing.T, name, v string) string {
	t.Helper()
	full := e.ns + "-" + name
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "buildcache.test/v1",
		"kind":       "Widget",
		"metadata":   map[string]any{"name": full, "labels": map[string]any{"test": e.ns, "v": v}},
		"spec":       map[string]any{"url": "https://example.test/" + name},
	}}
	if _, err := e.admin.Resource(widgets).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return full
}

// job creates a Job in the test's namespace (it never runs: there is no
// controller-manager).
func (e *realEnv) job(t *testing.T, name string, labels map[string]string) *batchv1.Job {
	t.Helper()
	j, err := e.cs.BatchV1().Jobs(e.ns).Create(t.Context(), newRealJob(name, labels), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func newRealJob(name string, labels map[string]string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"true"}}},
		}}},
	}
}

// relabel sets label k=v on the object ns/name of gvr with the admin
// client, behind the cache's back, retrying while a restarted API server
// is not yet answering.
func (e *realEnv) relabel(t *testing.T, gvr schema.GroupVersionResource, ns, name, k, v string) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, k, v)
	var err error
	for range 100 {
		if _, err = e.admin.Resource(gvr).Namespace(ns).Patch(t.Context(), name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
}

// bind grants user verbs on resources of group in the test's namespace.
func (e *realEnv) bind(t *testing.T, user, group string, resources []string, verbs ...string) {
	t.Helper()
	ctx := t.Context()
	name := user + "-" + strings.Join(verbs, "-")
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{group}, Resources: resources, Verbs: verbs}},
	}
	if _, err := e.cs.RbacV1().Roles(e.ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if _, err := e.cs.RbacV1().RoleBindings(e.ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// logBuffer is a slog handler's destination that tests can read while the
// client writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// pollUntil polls cond until it holds, failing the test if d passes
// first. It is for the state of a real
// server, which no channel reports.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("%v passed waiting for %s", time.Since(start).Round(time.Millisecond), what)
		case <-tick.C:
		}
	}
}
