package k8sclient_test

// The tests run real client-go clients (dynamic and typed, built from
// rest.Config{Host: srv.URL} with client-go's default QPS 5 and Burst 10)
// against k8stest's API-server double on 127.0.0.1. Each test makes its
// own clients, so each starts with a full token bucket; tests that make
// more than ten requests are throttled as a user's program would be.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

var (
	jobs  = k8stest.JobsGVR
	repos = k8stest.PackageRepositoriesGVR
)

// env is an API-server double with clients for it.
type env struct {
	srv   *k8stest.Server
	dyn   dynamic.Interface
	cs    kubernetes.Interface
	clock *testclock.Clock
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := k8stest.NewServer()
	t.Cleanup(srv.Close)
	dyn, err := dynamic.NewForConfig(srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, dyn: dyn, cs: cs, clock: testclock.New(time.Date(2025, 6, 25, 18, 34, 32, 0, time.UTC))}
}

// client returns a Client on e's dynamic client and fake clock, closed
// when the test ends (before the server is).
func (e *env) client(t testing.TB, opts ...k8sclient.Option) *k8sclient.Client {
	t.Helper()
	c, err := k8sclient.New(e.dyn, append([]k8sclient.Option{k8sclient.WithClock(e.clock.Now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// job creates a Job on the server, behind any client's back.
func (e *env) job(t testing.TB, ns, name string, labels map[string]string) *unstructured.Unstructured {
	t.Helper()
	u, err := e.srv.Create(jobs, k8stest.NewJob(ns, name, labels))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// repo creates a PackageRepository on the server.
func (e *env) repo(t testing.TB, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := e.srv.Create(repos, k8stest.NewPackageRepository(name, "https://packages.dl.glasskube.dev/"+name))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// setLabel changes a label of an object on the server, behind any
// client's back.
func (e *env) setLabel(t testing.TB, gvr schema.GroupVersionResource, ns, name, k, v string) {
	t.Helper()
	u, err := e.srv.Get(gvr, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	l := u.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	l[k] = v
	u.SetLabels(l)
	if _, err := e.srv.Update(gvr, u); err != nil {
		t.Fatal(err)
	}
}

// wantRequests fails the test unless the server has counted n requests of
// verb on resource.
func (e *env) wantRequests(t testing.TB, verb, resource string, n int) {
	t.Helper()
	if got := e.srv.Count(verb, resource); got != n {
		t.Fatalf("%s %s requests = %d, want %d", verb, resource, got, n)
	}
}

// waitFor polls cond until it holds, failing the test after 20s. It is for
// conditions other goroutines make true promptly (a watch opening, an
// event arriving).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// result is what a read started in a goroutine returned.
type result[T any] struct {
	val T
	err error
}

// goRead runs read in a goroutine and returns a channel with its result.
func goRead[T any](read func() (T, error)) <-chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		v, err := read()
		ch <- result[T]{v, err}
	}()
	return ch
}

func label(u *unstructured.Unstructured, k string) string { return u.GetLabels()[k] }

func name(i int) string { return fmt.Sprintf("job-%03d", i) }

var bg = context.Background()
