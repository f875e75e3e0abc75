package k8sclient

import (
	"fmt"
	"runtime"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The size estimates behind WithMaxCost are close to the heap that decoded
// objects really take, with and without managedFields, unstructured and
// typed, so that the bound reads as bytes.
func TestSizeEstimates(t *testing.T) {
	srv := k8stest.NewServer()
	defer srv.Close()
	for i := range 600 {
		if _, err := srv.Create(k8stest.JobsGVR, k8stest.NewJob("ns", fmt.Sprintf("job-%04d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	dyn := dynamic.NewForConfigOrDie(srv.Config())
	cs := kubernetes.NewForConfigOrDie(srv.Config())
	ctx := t.Context()
	keep := &options{keepManaged: true}
	strip := &options{}

	check := func(what string, heap uint64, est int64) {
		t.Helper()
		ratio := float64(est) / float64(heap)
		t.Logf("%s: heap %d bytes, estimate %d (%.2f)", what, heap, est, ratio)
		if ratio < 0.75 || ratio > 1.33 {
			t.Errorf("%s: the estimate is %.2f times the heap", what, ratio)
		}
	}

	h0 := heapInUse()
	ul, err := dyn.Resource(k8stest.JobsGVR).Namespace("ns").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var est int64
	for i := range ul.Items {
		keep.prepUnstructured(&ul.Items[i])
		est += unstructuredSize(ul.Items[i].Object)
	}
	check("unstructured", heapInUse()-h0, est)
	est = 0
	for i := range ul.Items {
		strip.prepUnstructured(&ul.Items[i])
		est += unstructuredSize(ul.Items[i].Object)
	}
	check("unstructured without managedFields", heapInUse()-h0, est)
	runtime.KeepAlive(ul)
	ul = nil

	// The server keeps each object's protobuf encoding once made: make
	// them before measuring.
	if _, err := cs.BatchV1().Jobs("ns").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	h0 = heapInUse()
	tl, err := cs.BatchV1().Jobs("ns").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check("typed", heapInUse()-h0, typedSize(tl))
	if err := eachListItem(tl, strip.prepTyped); err != nil {
		t.Fatal(err)
	}
	check("typed without managedFields", heapInUse()-h0, typedSize(tl))
	runtime.KeepAlive(tl)
}
