package k8sclient_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

// NewTyped wraps clientset.BatchV1().Jobs as it is: the same caching, for
// *batchv1.Job and *batchv1.JobList.
func TestTypedJobs(t *testing.T) {
	e := newEnv(t)
	e.job(t, "sched", "a", map[string]string{"team": "data"})
	e.job(t, "sched", "b", nil)
	ctx := t.Context()
	jt, err := k8sclient.NewTyped(e.cs.BatchV1().Jobs, k8sclient.WithClock(e.clock.Now), k8sclient.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer jt.Close()

	var job *batchv1.Job
	for range 3 {
		if job, err = jt.Get(ctx, "sched", "a"); err != nil {
			t.Fatal(err)
		}
	}
	e.wantRequests(t, k8stest.VerbGet, "jobs", 1)
	if job.Name != "a" || job.Status.Succeeded != 1 || len(job.ManagedFields) != 0 {
		t.Fatalf("Get = %s, succeeded %d, %d managedFields", job.Name, job.Status.Succeeded, len(job.ManagedFields))
	}

	// The caller's copy.
	job.Labels["team"] = "mutated"
	job.Spec.Template.Spec.Containers[0].Image = "mutated"
	again, _ := jt.Get(ctx, "sched", "a")
	if again.Labels["team"] != "data" || again.Spec.Template.Spec.Containers[0].Image == "mutated" {
		t.Fatal("a caller's change to a typed Get result reached the cache")
	}

	l, err := jt.List(ctx, "sched", metav1.ListOptions{LabelSelector: "team=data"})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("List = %v, %v", l, err)
	}
	l.Items[0].Name = "mutated"
	if l, _ := jt.List(ctx, "sched", metav1.ListOptions{LabelSelector: "team=data"}); l.Items[0].Name != "a" || len(l.Items[0].ManagedFields) != 0 {
		t.Fatal("a caller's change to a typed List reached the cache, or managedFields were kept")
	}
	e.wantRequests(t, k8stest.VerbList, "jobs", 1)

	// Exists, with DolphinScheduler's contract.
	if ok, err := jt.Exists(ctx, "sched", "a"); !ok || err != nil {
		t.Fatalf("Exists(a) = %v, %v", ok, err)
	}
	if ok, err := jt.Exists(ctx, "sched", "c"); ok || err != nil {
		t.Fatalf("Exists(c) = %v, %v", ok, err)
	}

	// Writes invalidate.
	if _, err := jt.Create(ctx, "sched", typedJob("sched", "c"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := jt.Exists(ctx, "sched", "c"); !ok {
		t.Fatal("Exists after Create = false")
	}
	if _, err := jt.Patch(ctx, "sched", "a", types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"ops"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if j, _ := jt.Get(ctx, "sched", "a"); j.Labels["team"] != "ops" {
		t.Fatalf("Get after Patch: team=%s", j.Labels["team"])
	}
	j, _ := jt.Get(ctx, "sched", "b")
	j.Labels = map[string]string{"team": "ops"}
	if _, err := jt.Update(ctx, "sched", j, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if l, _ := jt.List(ctx, "sched", metav1.ListOptions{LabelSelector: "team=ops"}); len(l.Items) != 2 {
		t.Fatalf("List after Update and Patch: %d items, want 2", len(l.Items))
	}
	if err := jt.Delete(ctx, "sched", "c", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := jt.Exists(ctx, "sched", "c"); ok {
		t.Fatal("Exists after Delete = true")
	}
	_, err = jt.Get(ctx, "sched", "c")
	if !apierrors.IsNotFound(err) {
		t.Fatalf("Get after Delete: %v", err)
	}

	// The TTL.
	e.srv.ResetCounts()
	jt.Get(ctx, "sched", "a")
	e.clock.Advance(time.Minute)
	jt.Get(ctx, "sched", "a")
	e.wantRequests(t, k8stest.VerbGet, "jobs", 1)

	if s := jt.Stats(); s.Writes != 4 || s.Hits == 0 {
		t.Errorf("Stats = %+v", s)
	}
	jt.Close()
	if _, err := jt.Get(ctx, "sched", "a"); !errors.Is(err, k8sclient.ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
}

func typedJob(ns, name string) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// readOnlyJobs is a client with reads only.
type readOnlyJobs struct{}

func (readOnlyJobs) Get(ctx context.Context, name string, _ metav1.GetOptions) (*batchv1.Job, error) {
	return typedJob("x", name), nil
}

func (readOnlyJobs) List(context.Context, metav1.ListOptions) (*batchv1.JobList, error) {
	return &batchv1.JobList{}, nil
}

func TestTypedOptionsAndMissingMethods(t *testing.T) {
	forNs := func(string) readOnlyJobs { return readOnlyJobs{} }
	for _, opt := range []k8sclient.Option{k8sclient.WithWatch(jobs), k8sclient.WithTTLFor(jobs, time.Second), k8sclient.WithTTL(-1)} {
		if _, err := k8sclient.NewTyped(forNs, opt); err == nil {
			t.Error("NewTyped accepted an option it cannot use")
		}
	}
	jt, err := k8sclient.NewTyped(forNs)
	if err != nil {
		t.Fatal(err)
	}
	defer jt.Close()
	if j, err := jt.Get(t.Context(), "x", "a"); err != nil || j.Name != "a" {
		t.Fatal(j, err)
	}
	_, err = jt.Create(t.Context(), "x", typedJob("x", "b"), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "has no Create method") {
		t.Errorf("Create on a client without one: %v", err)
	}
}
