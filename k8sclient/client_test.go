package k8sclient_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

// The Glasskube case: repeated Gets of a few PackageRepositories cost one
// request each, then none until the TTL.
func TestGetIsCachedForTheTTL(t *testing.T) {
	e := newEnv(t)
	for i := range 10 {
		e.repo(t, name(i))
	}
	c := e.client(t, k8sclient.WithTTL(time.Minute))
	ctx := t.Context()

	for i := range 200 {
		r, err := c.Get(ctx, repos, "", name(i%10))
		if err != nil {
			t.Fatal(err)
		}
		if r.GetName() != name(i%10) {
			t.Fatalf("Get(%s) returned %s", name(i%10), r.GetName())
		}
	}
	e.wantRequests(t, k8stest.VerbGet, "packagerepositories", 10)

	e.clock.Advance(59 * time.Second)
	if _, err := c.Get(ctx, repos, "", name(0)); err != nil {
		t.Fatal(err)
	}
	e.wantRequests(t, k8stest.VerbGet, "packagerepositories", 10)

	e.clock.Advance(time.Second) // the TTL has passed
	if _, err := c.Get(ctx, repos, "", name(0)); err != nil {
		t.Fatal(err)
	}
	e.wantRequests(t, k8stest.VerbGet, "packagerepositories", 11)

	s := c.Stats()[repos]
	if s.Hits != 191 || s.Misses != 11 || s.Requests != 11 || s.RequestsAvoided != 191 {
		t.Errorf("Stats = %+v, want 191 hits, 11 misses, 11 requests, 191 avoided", s)
	}
}

func TestTTLPerResourceType(t *testing.T) {
	e := newEnv(t)
	e.repo(t, "glasskube")
	e.job(t, "default", "pi", nil)
	c := e.client(t, k8sclient.WithTTL(time.Minute), k8sclient.WithTTLFor(repos, 10*time.Minute))
	ctx := t.Context()
	read := func() {
		t.Helper()
		if _, err := c.Get(ctx, repos, "", "glasskube"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, jobs, "default", "pi"); err != nil {
			t.Fatal(err)
		}
	}
	read()
	e.clock.Advance(2 * time.Minute)
	read()
	e.wantRequests(t, k8stest.VerbGet, "jobs", 2)                // Jobs: 1m, expired
	e.wantRequests(t, k8stest.VerbGet, "packagerepositories", 1) // repos: 10m, still fresh
	e.clock.Advance(8 * time.Minute)
	read()
	e.wantRequests(t, k8stest.VerbGet, "packagerepositories", 2)
}

func TestListIsCachedBySelectors(t *testing.T) {
	e := newEnv(t)
	e.job(t, "a", "x", map[string]string{"tier": "batch", "team": "data"})
	e.job(t, "a", "y", map[string]string{"tier": "batch"})
	e.job(t, "b", "z", map[string]string{"tier": "batch", "team": "data"})
	c := e.client(t)
	ctx := t.Context()

	list := func(ns string, opts metav1.ListOptions) []string {
		t.Helper()
		l, err := c.List(ctx, jobs, ns, opts)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, it := range l.Items {
			names = append(names, it.GetNamespace()+"/"+it.GetName())
		}
		return names
	}
	for _, step := range []struct {
		ns    string
		opts  metav1.ListOptions
		want  int // items
		lists int // LIST requests so far
	}{
		{"a", metav1.ListOptions{}, 2, 1},
		{"a", metav1.ListOptions{}, 2, 1},
		{"a", metav1.ListOptions{LabelSelector: "tier=batch,team=data"}, 1, 2},
		{"a", metav1.ListOptions{LabelSelector: "team=data, tier=batch"}, 1, 2}, // same selector, canonically
		{"a", metav1.ListOptions{FieldSelector: "metadata.name=y"}, 1, 3},
		{"b", metav1.ListOptions{}, 1, 4},
		{"", metav1.ListOptions{}, 3, 5}, // all namespaces
		{"", metav1.ListOptions{LabelSelector: "team=data"}, 2, 6},
		{"", metav1.ListOptions{}, 3, 6},
	} {
		if got := list(step.ns, step.opts); len(got) != step.want {
			t.Fatalf("List(%q, %+v) = %v, want %d items", step.ns, step.opts, got, step.want)
		}
		e.wantRequests(t, k8stest.VerbList, "jobs", step.lists)
	}

	// Pages and resourceVersions are not cached: they go to the server
	// every time.
	for range 2 {
		if got := list("a", metav1.ListOptions{Limit: 1}); len(got) != 1 {
			t.Fatalf("List with Limit 1 = %v", got)
		}
	}
	e.wantRequests(t, k8stest.VerbList, "jobs", 8)
	if s := c.Stats()[jobs]; s.Uncached != 2 || s.Hits != 3 {
		t.Errorf("Stats = %+v, want 2 uncached Lists and 3 hits", s)
	}
}

// The DolphinScheduler case: Exists is one GET by name, never a LIST,
// whatever the namespace holds.
func TestExistsIsOneGetNeverAList(t *testing.T) {
	e := newEnv(t)
	for i := range 300 {
		e.job(t, "scheduler", name(i), nil)
	}
	c := e.client(t)
	ctx := t.Context()
	e.srv.ResetCounts()

	ok, err := c.Exists(ctx, jobs, "scheduler", name(7))
	if err != nil || !ok {
		t.Fatalf("Exists(existing) = %v, %v; want true, nil", ok, err)
	}
	e.wantRequests(t, k8stest.VerbGet, "jobs", 1)
	ok, err = c.Exists(ctx, jobs, "scheduler", "no-such-job")
	if err != nil || ok {
		t.Fatalf("Exists(missing) = %v, %v; want false, nil", ok, err)
	}
	e.wantRequests(t, k8stest.VerbGet, "jobs", 2)
	e.wantRequests(t, "", "", 2) // no LIST, nothing else
	if sent := e.srv.BytesSent(); sent > 16<<10 {
		t.Errorf("the server sent %d bytes for two Exists; a LIST would be ~700 KiB", sent)
	}
}

func TestJobExistsKeepsTheContract(t *testing.T) {
	e := newEnv(t)
	e.job(t, "scheduler", "flink-42", nil)
	c := e.client(t)
	ctx := t.Context()

	// jobExist(jobName, namespace): true if it exists…
	if ok, err := c.JobExists(ctx, "scheduler", "flink-42"); !ok || err != nil {
		t.Fatalf("JobExists(existing) = %v, %v", ok, err)
	}
	// …false if the API server says 404…
	if ok, err := c.JobExists(ctx, "scheduler", "flink-43"); ok || err != nil {
		t.Fatalf("JobExists(missing) = %v, %v", ok, err)
	}
	// …and any other failure is reported, never read as "does not exist".
	for _, code := range []int{http.StatusForbidden, http.StatusInternalServerError, http.StatusServiceUnavailable} {
		remove := e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbGet, Name: "flink-44", Code: code})
		ok, err := c.JobExists(ctx, "scheduler", "flink-44")
		remove()
		var status apierrors.APIStatus
		if ok || !errors.As(err, &status) || int(status.Status().Code) != code {
			t.Errorf("JobExists with a %d answer = %v, %v; want false and the %d error", code, ok, err, code)
		}
	}
	e.wantRequests(t, k8stest.VerbList, "", 0)
}

func TestNegativeCaching(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, k8sclient.WithTTL(time.Minute), k8sclient.WithNegativeTTL(10*time.Second))
	ctx := t.Context()

	_, err := c.Get(ctx, jobs, "default", "later")
	if !apierrors.IsNotFound(err) || !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Get(missing) error = %v; want one satisfying apierrors.IsNotFound and errors.Is(err, cache.ErrNotFound)", err)
	}
	// A hot "does it exist?" loop: answered from memory.
	for range 100 {
		if ok, err := c.Exists(ctx, jobs, "default", "later"); ok || err != nil {
			t.Fatalf("Exists = %v, %v", ok, err)
		}
	}
	e.wantRequests(t, k8stest.VerbGet, "jobs", 1)
	if s := c.Stats()[jobs]; s.NegativeHits != 100 {
		t.Errorf("NegativeHits = %d, want 100", s.NegativeHits)
	}

	// The 404 is forgotten after the negative TTL, shorter than the TTL…
	e.job(t, "default", "later", nil) // behind the client's back
	e.clock.Advance(10 * time.Second)
	if ok, err := c.Exists(ctx, jobs, "default", "later"); !ok || err != nil {
		t.Fatalf("Exists after the negative TTL = %v, %v; want true", ok, err)
	}
	e.wantRequests(t, k8stest.VerbGet, "jobs", 2)

	// …and at once when the object is created through the client.
	if ok, _ := c.Exists(ctx, jobs, "default", "made-here"); ok {
		t.Fatal("made-here exists before it was made")
	}
	if _, err := c.Create(ctx, jobs, "default", k8stest.NewJob("default", "made-here", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Exists(ctx, jobs, "default", "made-here"); !ok || err != nil {
		t.Fatalf("Exists after Create = %v, %v; want true", ok, err)
	}

	t.Run("off", func(t *testing.T) {
		c := e.client(t, k8sclient.WithNegativeTTL(0))
		e.srv.ResetCounts()
		for range 3 {
			c.Exists(ctx, jobs, "default", "never")
		}
		e.wantRequests(t, k8stest.VerbGet, "jobs", 3)
	})
}

// 64 goroutines missing the same key cause one request; the request is
// held at the server until all of them have joined it.
func TestConcurrentMissesShareOneRequest(t *testing.T) {
	e := newEnv(t)
	e.repo(t, "glasskube")
	c := e.client(t)
	ctx := t.Context()

	for _, tc := range []struct {
		name string
		verb string
		read func() (any, error)
	}{
		{"Get", k8stest.VerbGet, func() (any, error) { return c.Get(ctx, repos, "", "glasskube") }},
		{"List", k8stest.VerbList, func() (any, error) { return c.List(ctx, repos, "", metav1.ListOptions{}) }},
		{"Exists of a missing object", k8stest.VerbGet, func() (any, error) { return c.Exists(ctx, repos, "", "missing") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.Stats()[repos].Coalesced
			e.srv.ResetCounts()
			release := make(chan struct{})
			remove := e.srv.Inject(k8stest.Fault{Verb: tc.verb, Hold: release})
			defer remove()

			const n = 64
			results := make([]<-chan result[any], n)
			for i := range results {
				results[i] = goRead(tc.read)
			}
			waitFor(t, "63 callers to join the first one's request", func() bool {
				return c.Stats()[repos].Coalesced-before == n-1
			})
			close(release)
			for _, ch := range results {
				if r := <-ch; r.err != nil {
					t.Fatal(r.err)
				}
			}
			e.wantRequests(t, tc.verb, "packagerepositories", 1)
		})
	}
}

func TestFreshBypassesTheCache(t *testing.T) {
	e := newEnv(t)
	e.job(t, "default", "pi", map[string]string{"v": "1"})
	c := e.client(t)
	ctx := t.Context()

	if j, err := c.Get(ctx, jobs, "default", "pi"); err != nil || label(j, "v") != "1" {
		t.Fatalf("Get = %v, %v", j, err)
	}
	e.setLabel(t, jobs, "default", "pi", "v", "2") // behind the client's back

	if j, _ := c.Get(ctx, jobs, "default", "pi"); label(j, "v") != "1" {
		t.Fatalf("plain Get saw v=%s; want the cached v=1 (this test relies on the TTL)", label(j, "v"))
	}
	j, err := c.Get(ctx, jobs, "default", "pi", k8sclient.Fresh())
	if err != nil || label(j, "v") != "2" {
		t.Fatalf("Get(Fresh) = v=%s, %v; want v=2 from the server", label(j, "v"), err)
	}
	e.wantRequests(t, k8stest.VerbGet, "jobs", 2)
	// What Fresh read replaced the cached object.
	if j, _ := c.Get(ctx, jobs, "default", "pi"); label(j, "v") != "2" {
		t.Fatalf("Get after Fresh saw v=%s; want 2", label(j, "v"))
	}
	e.wantRequests(t, k8stest.VerbGet, "jobs", 2)

	// Exists and List take Fresh too.
	e.srv.Delete(jobs, "default", "pi")
	if ok, err := c.Exists(ctx, jobs, "default", "pi", k8sclient.Fresh()); ok || err != nil {
		t.Fatalf("Exists(Fresh) after a delete = %v, %v", ok, err)
	}
	if l, err := c.List(ctx, jobs, "default", metav1.ListOptions{}, k8sclient.Fresh()); err != nil || len(l.Items) != 0 {
		t.Fatalf("List(Fresh) = %d items, %v", len(l.Items), err)
	}
	if s := c.Stats()[jobs]; s.Fresh != 3 {
		t.Errorf("Stats.Fresh = %d, want 3", s.Fresh)
	}
}

// Each write drops the object and every List that could hold it (its
// namespace's and all namespaces'), but not other namespaces' Lists;
// failed writes too.
func TestWritesInvalidate(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name  string
		write func(c *k8sclient.Client) error
		fail  bool // the write fails with 409
	}{
		{"Create", func(c *k8sclient.Client) error {
			_, err := c.Create(ctx, jobs, "a", k8stest.NewJob("a", "new", nil), metav1.CreateOptions{})
			return err
		}, false},
		{"Update", func(c *k8sclient.Client) error {
			j, err := c.Get(ctx, jobs, "a", "x")
			if err != nil {
				return err
			}
			j.SetLabels(map[string]string{"v": "2"})
			_, err = c.Update(ctx, jobs, "a", j, metav1.UpdateOptions{})
			return err
		}, false},
		{"Patch", func(c *k8sclient.Client) error {
			_, err := c.Patch(ctx, jobs, "a", "x", types.MergePatchType, []byte(`{"metadata":{"labels":{"v":"2"}}}`), metav1.PatchOptions{})
			return err
		}, false},
		{"Delete", func(c *k8sclient.Client) error {
			return c.Delete(ctx, jobs, "a", "x", metav1.DeleteOptions{})
		}, false},
		{"failed Update", func(c *k8sclient.Client) error {
			j, err := c.Get(ctx, jobs, "a", "x")
			if err != nil {
				return err
			}
			_, err = c.Update(ctx, jobs, "a", j, metav1.UpdateOptions{})
			return err
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.job(t, "a", "x", map[string]string{"v": "1"})
			e.job(t, "b", "y", nil)
			c := e.client(t)
			read := func() {
				t.Helper()
				for _, err := range []error{
					get(c, ctx, "a", "x"),
					get(c, ctx, "a", "new"),
					list(c, ctx, "a"),
					list(c, ctx, "b"),
					list(c, ctx, ""),
				} {
					if err != nil && !apierrors.IsNotFound(err) {
						t.Fatal(err)
					}
				}
			}
			read()
			e.wantRequests(t, k8stest.VerbGet, "jobs", 2)
			e.wantRequests(t, k8stest.VerbList, "jobs", 3)
			if tc.fail {
				defer e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbUpdate, Code: http.StatusConflict})()
			}
			err := tc.write(c)
			if tc.fail != (err != nil) {
				t.Fatalf("write: %v", err)
			}
			if tc.fail && !apierrors.IsConflict(err) {
				t.Fatalf("write error %v; want the 409 passed through", err)
			}
			e.srv.ResetCounts()
			read()
			// Of the two objects read, only the written one is fetched
			// again (for Create, "new": its remembered 404 is gone); of
			// the Lists, a's and all namespaces', not b's.
			e.wantRequests(t, k8stest.VerbGet, "jobs", 1)
			e.wantRequests(t, k8stest.VerbList, "jobs", 2)
			if s := c.Stats()[jobs]; s.Writes != 1 {
				t.Errorf("Writes = %d, want 1", s.Writes)
			}
		})
	}
}

func get(c *k8sclient.Client, ctx context.Context, ns, name string) error {
	_, err := c.Get(ctx, jobs, ns, name)
	return err
}

func list(c *k8sclient.Client, ctx context.Context, ns string) error {
	_, err := c.List(ctx, jobs, ns, metav1.ListOptions{})
	return err
}

// A fetch that started before a write must not store what it read: the
// write's invalidation wins, and the next read fetches again.
func TestNoStaleWriteBack(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		verb string
		read func(c *k8sclient.Client) (string, error) // the label v of job x as read
	}{
		{"Get", k8stest.VerbGet, func(c *k8sclient.Client) (string, error) {
			j, err := c.Get(ctx, jobs, "a", "x")
			if err != nil {
				return "", err
			}
			return label(j, "v"), nil
		}},
		{"List", k8stest.VerbList, func(c *k8sclient.Client) (string, error) {
			l, err := c.List(ctx, jobs, "a", metav1.ListOptions{})
			if err != nil || len(l.Items) != 1 {
				return "", err
			}
			return label(&l.Items[0], "v"), nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.job(t, "a", "x", map[string]string{"v": "1"})
			c := e.client(t)

			// The read is answered from the server's state of now (v=1),
			// but the answer is held on its way back.
			release := make(chan struct{})
			remove := e.srv.Inject(k8stest.Fault{Verb: tc.verb, HoldAnswer: release, Times: 1})
			defer remove()
			old := goRead(func() (string, error) { return tc.read(c) })
			waitFor(t, "the read to reach the server", func() bool { return e.srv.Count(tc.verb, "jobs") == 1 })

			// Meanwhile the object changes through the client.
			if _, err := c.Patch(ctx, jobs, "a", "x", types.MergePatchType, []byte(`{"metadata":{"labels":{"v":"2"}}}`), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
			close(release)
			if r := <-old; r.err != nil || r.val != "1" {
				t.Fatalf("the held read = v=%s, %v; want v=1, read before the patch", r.val, r.err)
			}
			// Its caller got v=1, but the cache did not keep it.
			v, err := tc.read(c)
			if err != nil || v != "2" {
				t.Fatalf("read after the patch = v=%s, %v; want v=2", v, err)
			}
			e.wantRequests(t, tc.verb, "jobs", 2) // the held one, and one after the patch
		})
	}
}

// Errors are returned as client-go returns them, and only 404s are
// remembered.
func TestErrorsPassThrough(t *testing.T) {
	e := newEnv(t)
	e.job(t, "default", "pi", nil)
	c := e.client(t)
	ctx := t.Context()

	for _, tc := range []struct {
		name  string
		fault k8stest.Fault
		is    func(error) bool
	}{
		{"429 without Retry-After", k8stest.Fault{Code: http.StatusTooManyRequests}, apierrors.IsTooManyRequests},
		{"500", k8stest.Fault{Code: http.StatusInternalServerError}, apierrors.IsInternalError},
		{"403", k8stest.Fault{Code: http.StatusForbidden}, apierrors.IsForbidden},
		{"404 on a List (no such resource type)", k8stest.Fault{Code: http.StatusNotFound, Verb: k8stest.VerbList}, apierrors.IsNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Purge()
			e.srv.ResetCounts()
			remove := e.srv.Inject(tc.fault)
			_, getErr := c.Get(ctx, jobs, "default", "pi")
			_, listErr := c.List(ctx, jobs, "default", metav1.ListOptions{})
			remove()
			if tc.fault.Verb == "" && !tc.is(getErr) {
				t.Errorf("Get error = %v", getErr)
			}
			if !tc.is(listErr) {
				t.Errorf("List error = %v", listErr)
			}
			// Not remembered, 404 on a List aside: the next reads go
			// to the server and succeed.
			if _, err := c.Get(ctx, jobs, "default", "pi"); err != nil {
				t.Errorf("Get after the fault: %v", err)
			}
			if tc.fault.Verb == "" {
				if _, err := c.List(ctx, jobs, "default", metav1.ListOptions{}); err != nil {
					t.Errorf("List after the fault: %v", err)
				}
			}
		})
	}

	t.Run("429 with Retry-After is retried by client-go", func(t *testing.T) {
		c.Purge()
		e.srv.ResetCounts()
		defer e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbGet, Code: http.StatusTooManyRequests, RetryAfter: "0", Times: 1})()
		if _, err := c.Get(ctx, jobs, "default", "pi"); err != nil {
			t.Fatal(err)
		}
		e.wantRequests(t, k8stest.VerbGet, "jobs", 2)
	})

	t.Run("409 on Update", func(t *testing.T) {
		j, err := c.Get(ctx, jobs, "default", "pi")
		if err != nil {
			t.Fatal(err)
		}
		e.setLabel(t, jobs, "default", "pi", "v", "2") // j is stale now
		_, err = c.Update(ctx, jobs, "default", j, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			t.Fatalf("Update of a stale object: %v; want a 409 Conflict", err)
		}
		// Read fresh and retry, as the error asks.
		j, err = c.Get(ctx, jobs, "default", "pi", k8sclient.Fresh())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Update(ctx, jobs, "default", j, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Update after a fresh read: %v", err)
		}
	})

	t.Run("slow answer and a caller's deadline", func(t *testing.T) {
		c.Purge()
		release := make(chan struct{})
		defer e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbGet, Hold: release, Times: 1})()
		patient := goRead(func() (*unstructured.Unstructured, error) { return c.Get(ctx, jobs, "default", "pi") })
		waitFor(t, "the patient caller's request", func() bool { return c.Stats()[jobs].Misses > 0 && e.srv.Count(k8stest.VerbGet, "jobs") > 0 })
		short, cancel := context.WithTimeout(ctx, time.Millisecond)
		defer cancel()
		_, err := c.Get(short, jobs, "default", "pi")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get with an expired deadline: %v; want context.DeadlineExceeded", err)
		}
		// The impatient caller leaving does not fail the patient one.
		close(release)
		if r := <-patient; r.err != nil {
			t.Fatalf("patient caller: %v", r.err)
		}
	})
}

// Callers may change what they get without changing what others get.
func TestReturnedObjectsAreTheCallers(t *testing.T) {
	e := newEnv(t)
	e.job(t, "default", "pi", map[string]string{"v": "1"})
	c := e.client(t)
	ctx := t.Context()

	j, err := c.Get(ctx, jobs, "default", "pi")
	if err != nil {
		t.Fatal(err)
	}
	j.SetLabels(map[string]string{"v": "mutated"})
	unstructured.SetNestedField(j.Object, "mutated", "spec", "template", "spec", "containers")
	l, err := c.List(ctx, jobs, "default", metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.Items[0].SetName("mutated")
	l.Items = nil

	j2, _ := c.Get(ctx, jobs, "default", "pi")
	if label(j2, "v") != "1" {
		t.Errorf("a caller's change to a Get result reached the cache: v=%s", label(j2, "v"))
	}
	if _, ok, _ := unstructured.NestedSlice(j2.Object, "spec", "template", "spec", "containers"); !ok {
		t.Error("a caller's change to a nested field reached the cache")
	}
	l2, _ := c.List(ctx, jobs, "default", metav1.ListOptions{})
	if len(l2.Items) != 1 || l2.Items[0].GetName() != "pi" {
		t.Errorf("a caller's change to a List result reached the cache: %d items", len(l2.Items))
	}
	e.wantRequests(t, "", "jobs", 2) // and all of it from memory

	// Shared returns the cached object itself, as a lister does.
	s1, _ := c.Get(ctx, jobs, "default", "pi", k8sclient.Shared())
	s2, _ := c.Get(ctx, jobs, "default", "pi", k8sclient.Shared())
	if s1 != s2 || s1 == j2 {
		t.Error("Shared did not return the one cached object")
	}
}

func TestManagedFieldsTransformAndMaxCost(t *testing.T) {
	e := newEnv(t)
	e.job(t, "default", "pi", nil)
	ctx := t.Context()

	if j, _ := e.srv.Get(jobs, "default", "pi"); len(j.GetManagedFields()) == 0 {
		t.Fatal("the server's Job has no managedFields: the test proves nothing")
	}
	c := e.client(t)
	if j, _ := c.Get(ctx, jobs, "default", "pi"); len(j.GetManagedFields()) != 0 {
		t.Error("managedFields were kept by default")
	}
	l, _ := c.List(ctx, jobs, "", metav1.ListOptions{})
	if len(l.Items[0].GetManagedFields()) != 0 {
		t.Error("managedFields were kept in a List by default")
	}

	keep := e.client(t, k8sclient.WithManagedFields())
	if j, _ := keep.Get(ctx, jobs, "default", "pi"); len(j.GetManagedFields()) == 0 {
		t.Error("WithManagedFields dropped them")
	}

	slim := e.client(t, k8sclient.WithTransform(func(o runtime.Object) {
		unstructured.RemoveNestedField(o.(*unstructured.Unstructured).Object, "status")
	}))
	if j, _ := slim.Get(ctx, jobs, "default", "pi"); j.Object["status"] != nil {
		t.Error("WithTransform was not applied")
	}

	// A bound smaller than one Job: nothing can be kept, every read is a
	// request, and the refusals are counted as evictions.
	tiny := e.client(t, k8sclient.WithMaxCost(1024))
	e.srv.ResetCounts()
	for range 3 {
		if _, err := tiny.Get(ctx, jobs, "default", "pi"); err != nil {
			t.Fatal(err)
		}
	}
	e.wantRequests(t, k8stest.VerbGet, "jobs", 3)
	if s := tiny.Stats()[jobs]; s.Evictions == 0 {
		t.Errorf("Evictions = 0 with a bound smaller than an object")
	}
}

func TestStatsPerResourceType(t *testing.T) {
	e := newEnv(t)
	e.job(t, "default", "pi", nil)
	e.repo(t, "glasskube")
	c := e.client(t)
	ctx := t.Context()
	for range 3 {
		c.Get(ctx, jobs, "default", "pi")
		c.Exists(ctx, repos, "", "missing")
	}
	s := c.Stats()
	if j := s[jobs]; j.Hits != 2 || j.Misses != 1 || j.NegativeHits != 0 {
		t.Errorf("jobs: %+v", j)
	}
	if r := s[repos]; r.NegativeHits != 2 || r.Misses != 1 || r.Hits != 0 || r.Errors != 1 {
		t.Errorf("packagerepositories: %+v", r)
	}
	if sum := s[jobs].Add(s[repos]); sum.RequestsAvoided != 4 || sum.HitRatio() != 4.0/6 {
		t.Errorf("sum: %+v, ratio %v", sum, sum.HitRatio())
	}
}

func TestOptionsAndClose(t *testing.T) {
	e := newEnv(t)
	for _, opts := range [][]k8sclient.Option{
		{k8sclient.WithTTL(0)},
		{k8sclient.WithTTLFor(repos, -time.Second)},
		{k8sclient.WithTTLFor(repos.GroupResource().WithVersion(""), time.Second)},
		{k8sclient.WithNegativeTTL(-1)},
		{k8sclient.WithMaxCost(0)},
		{k8sclient.WithTransform(nil)},
		{k8sclient.WithWatchBackoff(time.Second, time.Millisecond)},
		{k8sclient.WithWatchProbe(0)},
		{k8sclient.WithClock(nil)},
		{k8sclient.WithLogger(nil)},
		{nil},
	} {
		if _, err := k8sclient.New(e.dyn, opts...); err == nil {
			t.Errorf("New accepted bad options %d", len(opts))
		}
	}
	if _, err := k8sclient.New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}

	c, err := k8sclient.New(e.dyn)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	ctx := t.Context()
	if _, err := c.Get(ctx, jobs, "default", "pi"); !errors.Is(err, k8sclient.ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	if _, err := c.Exists(ctx, jobs, "default", "pi"); !errors.Is(err, k8sclient.ErrClosed) {
		t.Errorf("Exists after Close: %v", err)
	}
	if err := c.Delete(ctx, jobs, "default", "pi", metav1.DeleteOptions{}); !errors.Is(err, k8sclient.ErrClosed) {
		t.Errorf("Delete after Close: %v", err)
	}
}

// Many goroutines reading, writing and invalidating a few objects through
// one client: run with -race. The API-server double is real, so requests
// are few (client-go throttles); the fake-client test below makes many.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		e.job(t, "default", name(i), nil)
	}
	c := e.client(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				n := name((g + i) % 3)
				switch i % 5 {
				case 0, 1:
					if j, err := c.Get(ctx, jobs, "default", n); err != nil {
						t.Error(err)
					} else {
						j.SetLabels(map[string]string{"g": "mine"}) // a caller's own copy
					}
				case 2:
					if _, err := c.List(ctx, jobs, "default", metav1.ListOptions{}); err != nil {
						t.Error(err)
					}
				case 3:
					if ok, err := c.Exists(ctx, jobs, "default", n); err != nil || !ok {
						t.Error(ok, err)
					}
				case 4:
					if g == 0 && i%25 == 4 {
						c.Invalidate(jobs, "default", n)
					}
					c.Stats()
				}
			}
		})
	}
	wg.Wait()
	if s := c.Stats()[jobs]; s.Requests > 20 {
		t.Errorf("%d requests for 800 reads of 3 objects", s.Requests)
	}
}
