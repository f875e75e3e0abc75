package k8sclient_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/k8sclient"
)

// Get, List and Exists of a CRD's objects and of Jobs, through Client
// and Typed: one request per object, then memory; a 404 remembered.
func TestRealGetListExists(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	ctx := t.Context()
	c := e.client(t, testserver.KubeAdmin, k8sclient.WithTTL(time.Hour))

	names := []string{e.widget(t, "a", "1"), e.widget(t, "b", "1"), e.widget(t, "c", "1")}
	for range 10 {
		for _, n := range names {
			u, err := c.Get(ctx, widgets, "", n)
			if err != nil || u.GetName() != n {
				t.Fatalf("Get %s = %v, %v", n, u, err)
			}
		}
	}
	l, err := c.List(ctx, widgets, "", metav1.ListOptions{LabelSelector: "test=" + e.ns})
	if err != nil || len(l.Items) != 3 {
		t.Fatalf("List = %v, %v; want 3 widgets", l, err)
	}
	if ok, err := c.Exists(ctx, widgets, "", names[0]); !ok || err != nil {
		t.Fatalf("Exists %s = %v, %v", names[0], ok, err)
	}
	if s := c.Stats()[widgets]; s.Requests != 4 || s.Hits != 28 {
		t.Fatalf("widgets: %d requests, %d hits; want 4 (3 GETs, a LIST) and 28", s.Requests, s.Hits)
	}

	e.job(t, "pi", map[string]string{"app": "pi"})
	for range 5 {
		if ok, err := c.JobExists(ctx, e.ns, "pi"); !ok || err != nil {
			t.Fatalf("JobExists pi = %v, %v", ok, err)
		}
	}
	typed, err := k8sclient.NewTyped(e.cs.BatchV1().Jobs, k8sclient.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(typed.Close)
	for range 5 {
		j, err := typed.Get(ctx, e.ns, "pi")
		if err != nil || j.Name != "pi" || len(j.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("typed Get pi = %v, %v", j, err)
		}
		jl, err := typed.List(ctx, e.ns, metav1.ListOptions{LabelSelector: "app=pi"})
		if err != nil || len(jl.Items) != 1 {
			t.Fatalf("typed List = %v, %v", jl, err)
		}
	}
	if s := typed.Stats(); s.Requests != 2 {
		t.Fatalf("typed: %d requests, want 2", s.Requests)
	}

	t.Run("negative caching", func(t *testing.T) {
		for range 5 {
			if ok, err := c.JobExists(ctx, e.ns, "later"); ok || err != nil {
				t.Fatalf("JobExists later = %v, %v; want false, nil", ok, err)
			}
		}
		before := c.Stats()[jobs]
		_, err := c.Get(ctx, jobs, e.ns, "later")
		if !apierrors.IsNotFound(err) || !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("Get later = %v; want a 404 that is cache.ErrNotFound", err)
		}
		e.job(t, "later", nil) // behind the cache's back: the 404 is still remembered
		if ok, err := c.JobExists(ctx, e.ns, "later"); ok || err != nil {
			t.Fatalf("JobExists later within the negative TTL = %v, %v; want the remembered false", ok, err)
		}
		if s := c.Stats()[jobs]; s.Requests != before.Requests || s.NegativeHits < 5 {
			t.Fatalf("jobs: %d requests (want %d), %d negative hits", s.Requests, before.Requests, s.NegativeHits)
		}
		if ok, err := c.JobExists(ctx, e.ns, "later", k8sclient.Fresh()); !ok || err != nil {
			t.Fatalf("JobExists later, Fresh = %v, %v", ok, err)
		}
	})
}

// Writes through the client drop what they change, on a real server.
func TestRealWriteInvalidates(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	ctx := t.Context()
	c := e.client(t, testserver.KubeAdmin, k8sclient.WithTTL(time.Hour))
	n := e.widget(t, "w", "1")
	sel := metav1.ListOptions{LabelSelector: "test=" + e.ns}
	u, err := c.Get(ctx, widgets, "", n)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := c.List(ctx, widgets, "", sel); err != nil || len(l.Items) != 1 {
		t.Fatalf("List = %v, %v", l, err)
	}
	u.SetLabels(map[string]string{"test": e.ns, "v": "2"})
	if _, err := c.Update(ctx, widgets, "", u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if u, err := c.Get(ctx, widgets, "", n); err != nil || label(u, "v") != "2" {
		t.Fatalf("Get after Update = %v, %v; want v=2", u, err)
	}
	if l, err := c.List(ctx, widgets, "", sel); err != nil || len(l.Items) != 1 || label(&l.Items[0], "v") != "2" {
		t.Fatalf("List after Update = %v, %v", l, err)
	}
	if err := c.Delete(ctx, widgets, "", n, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Exists(ctx, widgets, "", n); ok || err != nil {
		t.Fatalf("Exists after Delete = %v, %v", ok, err)
	}

	// A Create with generateName that fails names nothing to drop: both
	// Client and Typed then drop the namespace's Lists (it may have been
	// applied, if it timed out).
	t.Run("failed generateName create", func(t *testing.T) {
		typed, err := k8sclient.NewTyped(e.cs.BatchV1().Jobs, k8sclient.WithTTL(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(typed.Close)
		if _, err := typed.List(ctx, e.ns, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		bad := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{GenerateName: "bad-"}} // no template: 422
		if _, err := typed.Create(ctx, e.ns, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Fatalf("typed Create of an invalid Job = %v, want 422", err)
		}
		if _, err := typed.List(ctx, e.ns, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		if s := typed.Stats(); s.Requests != 2 {
			t.Fatalf("typed: %d LISTs, want 2: a failed generateName Create must drop the namespace's Lists", s.Requests)
		}

		if _, err := c.List(ctx, jobs, e.ns, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		before := c.Stats()[jobs].Requests
		if _, err := c.Create(ctx, jobs, e.ns, toUnstructured(t, bad), metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Fatalf("Create of an invalid Job = %v, want 422", err)
		}
		if _, err := c.List(ctx, jobs, e.ns, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := c.Stats()[jobs].Requests; got != before+1 {
			t.Fatalf("Client: %d LISTs after the failed Create, want 1", got-before)
		}
	})
}

// With WithWatch, a change made behind the client's back is seen before
// the TTL (an hour).
func TestRealWatchInvalidates(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	ctx := t.Context()
	e.job(t, "x", map[string]string{"v": "1"})
	c := e.client(t, testserver.KubeAdmin, k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(jobs))
	waitWatching(t, c, jobs)
	if j, err := c.Get(ctx, jobs, e.ns, "x"); err != nil || label(j, "v") != "1" {
		t.Fatalf("Get = %v, %v", j, err)
	}
	e.relabel(t, jobs, e.ns, "x", "v", "2")
	waitFor(t, "the watch to drop the changed Job", func() bool {
		j, err := c.Get(ctx, jobs, e.ns, "x")
		return err == nil && label(j, "v") == "2"
	})
	if s := c.Stats()[jobs]; s.WatchEvents == 0 || s.WatchError != nil {
		t.Fatalf("stats after a change seen = %+v", s)
	}
}

// A 404 for an endpoint the server does not serve is an error, not
// "does not exist", and it is not remembered; a 404 for an object is.
func TestRealUnknownResource(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	ctx := t.Context()
	c := e.client(t, testserver.KubeAdmin, k8sclient.WithTTL(time.Hour))
	w := e.widget(t, "w", "1")
	e.job(t, "j", nil)
	for _, tt := range []struct {
		what      string
		gvr       schema.GroupVersionResource
		ns, name  string
		wantFound bool
	}{
		{"CRD not installed", schema.GroupVersionResource{Group: "nope.buildcache.test", Version: "v1", Resource: "widgets"}, "", w, false},
		{"typo in the resource", schema.GroupVersionResource{Group: "buildcache.test", Version: "v1", Resource: "widgetz"}, "", w, false},
		{"typo in the version", schema.GroupVersionResource{Group: "buildcache.test", Version: "v2", Resource: "widgets"}, "", w, false},
		{"cluster-scoped asked with a namespace", widgets, e.ns, w, false},
		{"namespaced asked without one", jobs, "", "j", false},
	} {
		t.Run(tt.what, func(t *testing.T) {
			for i := range 2 {
				ok, err := c.Exists(ctx, tt.gvr, tt.ns, tt.name)
				if ok || err == nil || !errors.Is(err, k8sclient.ErrUnknownResource) || errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("Exists #%d = %v, %v; want false and ErrUnknownResource", i, ok, err)
				}
			}
			if s := c.Stats()[tt.gvr]; s.NegativeHits != 0 || s.Requests != 2 {
				t.Fatalf("%d requests, %d negative hits; want 2 and 0: the endpoint's 404 must not be remembered", s.Requests, s.NegativeHits)
			}
			if _, err := c.List(ctx, tt.gvr, tt.ns, metav1.ListOptions{}); tt.what != "namespaced asked without one" &&
				!errors.Is(err, k8sclient.ErrUnknownResource) {
				t.Fatalf("List = %v; want ErrUnknownResource", err)
			}
		})
	}
	for _, tt := range []struct {
		gvr      schema.GroupVersionResource
		ns, name string
	}{{widgets, "", e.ns + "-missing"}, {jobs, e.ns, "missing"}, {jobs, "no-such-namespace", "missing"}} {
		if ok, err := c.Exists(ctx, tt.gvr, tt.ns, tt.name); ok || err != nil {
			t.Fatalf("Exists %v %s/%s = %v, %v; want false, nil", tt.gvr, tt.ns, tt.name, ok, err)
		}
	}
}

// Every error of a read comes back alike: wrapped, with the StatusError
// reachable by errors.As, for a 404 as for a 403.
func TestRealErrorsAlike(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	ctx := t.Context()
	admin := e.client(t, testserver.KubeAdmin)
	nobody := e.client(t, testserver.KubeNobody)
	_, notFound := admin.Get(ctx, jobs, e.ns, "missing")
	_, forbidden := nobody.Get(ctx, jobs, e.ns, "missing")
	for _, tt := range []struct {
		err  error
		is   func(error) bool
		code int32
	}{{notFound, apierrors.IsNotFound, 404}, {forbidden, apierrors.IsForbidden, 403}} {
		var se *apierrors.StatusError
		if !errors.As(tt.err, &se) || se.ErrStatus.Code != tt.code || !tt.is(tt.err) {
			t.Fatalf("%v: errors.As to *StatusError = %v, want code %d", tt.err, se, tt.code)
		}
		if _, bare := tt.err.(*apierrors.StatusError); bare {
			t.Fatalf("%v is a bare *StatusError; every read error is wrapped alike", tt.err)
		}
	}
	if !errors.Is(notFound, cache.ErrNotFound) || errors.Is(forbidden, cache.ErrNotFound) {
		t.Fatalf("cache.ErrNotFound: 404 %v, 403 %v", errors.Is(notFound, cache.ErrNotFound), errors.Is(forbidden, cache.ErrNotFound))
	}
	if ok, err := nobody.JobExists(ctx, e.ns, "missing"); ok || !apierrors.IsForbidden(err) {
		t.Fatalf("JobExists without the right to get = %v, %v; want the 403", ok, err)
	}
}

// A user with only get and list in its namespace reads through the cache
// (it needs neither watch nor cluster-wide list).
func TestRealRBACGetListOnly(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	ctx := t.Context()
	e.bind(t, testserver.KubeLimited, "batch", []string{"jobs"}, "get", "list")
	e.job(t, "a", map[string]string{"app": "x"})
	c := e.client(t, testserver.KubeLimited, k8sclient.WithTTL(time.Hour))
	for range 3 {
		if ok, err := c.JobExists(ctx, e.ns, "a"); !ok || err != nil {
			t.Fatalf("JobExists a = %v, %v", ok, err)
		}
		if ok, err := c.JobExists(ctx, e.ns, "b"); ok || err != nil {
			t.Fatalf("JobExists b = %v, %v", ok, err)
		}
		if l, err := c.List(ctx, jobs, e.ns, metav1.ListOptions{LabelSelector: "app=x"}); err != nil || len(l.Items) != 1 {
			t.Fatalf("List = %v, %v", l, err)
		}
	}
	if s := c.Stats()[jobs]; s.Requests != 3 || s.Errors != 1 {
		t.Fatalf("%d requests, %d errors; want 3 and 1 (the 404)", s.Requests, s.Errors)
	}
	if _, err := c.List(ctx, jobs, "", metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("cluster-wide List = %v; want 403", err)
	}
	if err := c.Delete(ctx, jobs, e.ns, "a", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("Delete = %v; want 403", err)
	}
}

// A watch RBAC refuses does not fail silently: Stats and the log say so,
// and it is not retried at the first backoff's rate.
func TestRealForbiddenWatch(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	ctx := t.Context()
	e.bind(t, testserver.KubeLimited, "batch", []string{"jobs"}, "get", "list")
	e.job(t, "a", nil)
	var logs logBuffer
	c := e.client(t, testserver.KubeLimited, k8sclient.WithWatch(jobs),
		k8sclient.WithWatchBackoff(10*time.Millisecond, time.Hour), k8sclient.WithLogger(logs.logger()))
	waitFor(t, "the watch's 403 in Stats", func() bool { return apierrors.IsForbidden(c.Stats()[jobs].WatchError) })
	// Stats shows the error just before the try is counted and the line
	// logged: wait for the line, then look at the counts.
	waitFor(t, "the 403 logged at level ERROR", func() bool {
		l := logs.String()
		return strings.Contains(l, "level=ERROR") && strings.Contains(l, "forbidden")
	})
	s := c.Stats()[jobs]
	if s.Watching || s.WatchRestarts != 1 {
		t.Fatalf("stats = %+v; want not watching, one try", s)
	}
	// The cache works meanwhile, bounded by its TTL.
	if ok, err := c.JobExists(ctx, e.ns, "a"); !ok || err != nil {
		t.Fatalf("JobExists = %v, %v", ok, err)
	}
	// Ten first backoffs later the watch has not been tried again: it
	// waits the longest (an hour) after a 403.
	time.Sleep(200 * time.Millisecond)
	if s := c.Stats()[jobs]; s.WatchRestarts != 1 {
		t.Fatalf("%d tries of the forbidden watch in 200ms, want 1", s.WatchRestarts)
	}
}

// toUnstructured converts a Job for the dynamic client.
func toUnstructured(t *testing.T, j *batchv1.Job) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(j)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion("batch/v1")
	u.SetKind("Job")
	return u
}

// The watch survives a kill -9 of the API server, and a 410 Gone (etcd
// compacted past the watch's resourceVersion while the server was down)
// empties the cache as soon as the server answers, not a backoff later.
// Not parallel: it restarts the shared API server.
func TestRealAPIServerRestart(t *testing.T) {
	e := newRealEnv(t)
	ctx := t.Context()
	e.job(t, "x", map[string]string{"v": "1"})
	get := func(c *k8sclient.Client) string {
		j, err := c.Get(ctx, jobs, e.ns, "x")
		if err != nil {
			return "error: " + err.Error()
		}
		return label(j, "v")
	}

	t.Run("restart", func(t *testing.T) {
		c := e.client(t, testserver.KubeAdmin, k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(jobs),
			k8sclient.WithWatchBackoff(50*time.Millisecond, time.Second))
		waitWatching(t, c, jobs)
		if v := get(c); v != "1" {
			t.Fatalf("v = %s", v)
		}
		if err := e.k.RestartAPIServer(); err != nil {
			t.Fatal(err)
		}
		e.relabel(t, jobs, e.ns, "x", "v", "2")
		waitFor(t, "the change made after the restart", func() bool { return get(c) == "2" })
		waitWatching(t, c, jobs)
	})

	t.Run("410 Gone", func(t *testing.T) {
		// A first backoff of 2s: when the 410 comes the wait has doubled
		// at least once, so a purge that waited for the next retry would
		// leave x stale for 4s or more.
		var logs logBuffer
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("client log:\n%s", logs.String())
			}
		})
		c := e.client(t, testserver.KubeAdmin, k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(jobs),
			k8sclient.WithWatchBackoff(2*time.Second, time.Minute), k8sclient.WithLogger(logs.logger()))
		waitWatching(t, c, jobs)
		v := get(c)
		e.k.StopAPIServer()
		if err := e.k.CompactEtcd(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.k.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		e.relabel(t, jobs, e.ns, "x", "v", v+"3")
		// The restarted server's watch cache starts after the compacted
		// revision: resuming from x's answers 410 (as an error event or
		// as the watch's answer).
		waitFor(t, "the watch to be told 410 Gone", func() bool { return strings.Contains(logs.String(), "too old resource version") })
		deadline := time.Now().Add(2 * time.Second)
		for get(c) != v+"3" {
			if time.Now().After(deadline) {
				t.Fatalf("2s after the 410 Get still says v=%s (stats %+v)", get(c), c.Stats()[jobs])
			}
			time.Sleep(10 * time.Millisecond)
		}
		waitWatching(t, c, jobs)
		if s := c.Stats()[jobs]; s.WatchError != nil {
			t.Fatalf("watching again, yet WatchError = %v", s.WatchError)
		}
	})
}

// After an outage long enough for the watch's backoff to reach its
// longest wait (30s), with etcd compacted past the watch's
// resourceVersion meanwhile, a client with default options serves a
// change made at the API server's readiness within seconds, not a
// backoff later. Not parallel: it stops the shared API server.
func TestRealRecoveryAfterOutage(t *testing.T) {
	e := newRealEnv(t)
	ctx := t.Context()
	e.job(t, "x", map[string]string{"v": "1"})
	var logs logBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client log:\n%s", logs.String())
		}
	})
	c := e.client(t, testserver.KubeAdmin, k8sclient.WithWatch(jobs), k8sclient.WithLogger(logs.logger()))
	waitWatching(t, c, jobs)
	get := func() string {
		j, err := c.Get(ctx, jobs, e.ns, "x")
		if err != nil {
			return "error: " + err.Error()
		}
		return label(j, "v")
	}
	if v := get(); v != "1" {
		t.Fatalf("v = %s", v)
	}

	// The outage lasts until the watch has ended and failed 7 more tries:
	// with the backoff alone (250ms, doubling, up to 30s) that is at least
	// 31.75s, and the next try is 30s away.
	restarts := c.Stats()[jobs].WatchRestarts
	down := time.Now()
	e.k.StopAPIServer()
	if err := e.k.CompactEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 2*time.Minute, "8 tries of the watch", func() bool { return c.Stats()[jobs].WatchRestarts >= restarts+8 })
	if err := e.k.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	outage := ready.Sub(down)
	// At readiness: a read (a miss if the TTL ran out during the outage,
	// which caches x again) and the change.
	get()
	e.relabel(t, jobs, e.ns, "x", "v", "2")
	changed := time.Now()
	pollUntil(t, 5*time.Second, "the change made at readiness to be served", func() bool { return get() == "2" })
	t.Logf("outage %v; the change made at readiness (%v after it) served %v after it was made, %v after readiness",
		outage.Round(time.Second), changed.Sub(ready).Round(time.Millisecond),
		time.Since(changed).Round(time.Millisecond), time.Since(ready).Round(time.Millisecond))
	waitWatching(t, c, jobs)
}
