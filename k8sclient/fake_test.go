package k8sclient_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

// Under heavy concurrent reads, writes and invalidations, what the cache
// holds once the writers stop is what the server holds: no read that
// raced a write stored an older state after it. This runs on client-go's
// dynamic fake, which has no rate limiter, so that thousands of requests
// race; run it with -race.
func TestConcurrentWritesLeaveNoStaleEntries(t *testing.T) {
	const objects = 4
	var objs []runtime.Object
	for i := range objects {
		objs = append(objs, k8stest.NewJob("ns", name(i), map[string]string{"v": "0"}))
	}
	fake := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{jobs: "JobList"}, objs...)
	c, err := k8sclient.New(fake)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	if _, err := c.Get(ctx, jobs, "ns", name(0)); err != nil { // Writes counts from the first read of the type
		t.Fatal(err)
	}

	var (
		wg      sync.WaitGroup
		version atomic.Int64
	)
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				n := name((g + i) % objects)
				var err error
				switch i % 6 {
				case 0:
					patch := fmt.Sprintf(`{"metadata":{"labels":{"v":"%d"}}}`, version.Add(1))
					_, err = c.Patch(ctx, jobs, "ns", n, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
				case 1, 2:
					_, err = c.Get(ctx, jobs, "ns", n)
				case 3:
					_, err = c.List(ctx, jobs, "ns", metav1.ListOptions{})
				case 4:
					_, err = c.List(ctx, jobs, "", metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=dolphinscheduler"})
				case 5:
					if i%30 == 5 {
						c.Invalidate(jobs, "ns", n)
					}
					_, err = c.Exists(ctx, jobs, "ns", n)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	truth := map[string]string{}
	for i := range objects {
		u, err := fake.Resource(jobs).Namespace("ns").Get(ctx, name(i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		truth[name(i)] = label(u, "v")
	}
	for i := range objects {
		j, err := c.Get(ctx, jobs, "ns", name(i))
		if err != nil {
			t.Fatal(err)
		}
		if got := label(j, "v"); got != truth[name(i)] {
			t.Errorf("cached %s has v=%s, the server v=%s", name(i), got, truth[name(i)])
		}
	}
	for _, ns := range []string{"ns", ""} {
		l, err := c.List(ctx, jobs, ns, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range l.Items {
			if got := label(&it, "v"); got != truth[it.GetName()] {
				t.Errorf("cached List %q has %s with v=%s, the server v=%s", ns, it.GetName(), got, truth[it.GetName()])
			}
		}
	}
	s := c.Stats()[jobs]
	t.Logf("%d reads: %d hits, %d misses (%d coalesced), %d requests, %d writes", s.Hits+s.Misses, s.Hits, s.Misses, s.Coalesced, s.Requests, s.Writes)
	if s.Writes != 8*50 || version.Load() != 8*50 {
		t.Errorf("Writes = %d, want %d", s.Writes, 8*50)
	}
}
