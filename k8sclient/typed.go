package k8sclient

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// ObjectClient is what NewTyped wraps: the reads of a client-go typed
// client for one namespace, such as clientset.BatchV1().Jobs(namespace)
// (a batchv1.JobInterface is an ObjectClient[*batchv1.Job,
// *batchv1.JobList]).
type ObjectClient[T, L any] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
}

// Object is what a typed client returns: a Kubernetes object, such as
// *batchv1.Job.
type Object interface {
	runtime.Object
	metav1.Object
}

// The writes Typed passes through, when the wrapped client has them (every
// generated typed client does).
type (
	creator[T any] interface {
		Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	}
	updater[T any] interface {
		Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
	}
	patcher[T any] interface {
		Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
	}
	deleter interface {
		Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
	}
)

// Typed is a read-through, TTL'd cache in front of a client-go typed
// client for one resource type: Client's behaviour (see there) for T and
// L instead of unstructured objects. Create it with NewTyped and release
// it with Close. Its methods are safe for concurrent use, except Close.
type Typed[T Object, L runtime.Object] struct {
	forNamespace func(namespace string) ObjectClient[T, L]
	r            *resource[T, L]
	closed       atomic.Bool
}

// NewTyped returns a Typed reading through the typed client that
// forNamespace returns for a namespace; pass the method value of a typed
// clientset, whose type arguments Go infers:
//
//	jobs, err := k8sclient.NewTyped(clientset.BatchV1().Jobs, k8sclient.WithTTL(time.Minute))
//	job, err := jobs.Get(ctx, "default", "pi")          // *batchv1.Job
//	ok, err := jobs.Exists(ctx, "default", "pi")
//
// For a cluster-scoped type, wrap the clientset's method in a function
// that ignores its argument, and pass "" as the namespace. Options are
// New's, but for those that name a resource type (WithTTLFor, WithWatch),
// which NewTyped rejects; the defaults are New's.
func NewTyped[C ObjectClient[T, L], T Object, L runtime.Object](forNamespace func(namespace string) C, opts ...Option) (*Typed[T, L], error) {
	if forNamespace == nil {
		return nil, fmt.Errorf("k8sclient: NewTyped: nil client function")
	}
	o := defaultOptions()
	if err := o.apply(opts); err != nil {
		return nil, err
	}
	if o.typedOnlyErr != nil {
		return nil, o.typedOnlyErr
	}
	t := &Typed[T, L]{forNamespace: func(ns string) ObjectClient[T, L] { return forNamespace(ns) }}
	desc := reflect.TypeFor[T]().String()
	r, err := newResource(desc, &o, o.ttl, min(o.negTTL, o.ttl), backend[T, L]{
		get: func(ctx context.Context, ns, name string) (T, error) {
			return t.forNamespace(ns).Get(ctx, name, metav1.GetOptions{})
		},
		list: func(ctx context.Context, ns string, opts metav1.ListOptions) (L, error) {
			return t.forNamespace(ns).List(ctx, opts)
		},
		copyObj:  func(obj T) T { return obj.DeepCopyObject().(T) },
		copyList: func(l L) L { return l.DeepCopyObject().(L) },
		prepObj: func(obj T) int64 {
			o.prepTyped(obj)
			return typedSize(obj)
		},
		prepList: func(l L) int64 {
			_ = eachListItem(l, o.prepTyped)
			return typedSize(l)
		},
	})
	if err != nil {
		return nil, err
	}
	t.r = r
	return t, nil
}

func (t *Typed[T, L]) check() error {
	if t.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Get returns the object name in namespace, as Client.Get does.
func (t *Typed[T, L]) Get(ctx context.Context, namespace, name string, opts ...ReadOption) (T, error) {
	if err := t.check(); err != nil {
		var zero T
		return zero, err
	}
	return t.r.get(ctx, namespace, name, readOpts(opts))
}

// List returns the objects in namespace matching opts' selectors, as
// Client.List does.
func (t *Typed[T, L]) List(ctx context.Context, namespace string, opts metav1.ListOptions, ropts ...ReadOption) (L, error) {
	if err := t.check(); err != nil {
		var zero L
		return zero, err
	}
	return t.r.list(ctx, namespace, opts, readOpts(ropts))
}

// Exists reports whether the object name exists in namespace, as
// Client.Exists does: one GET by name, false with a nil error on 404.
func (t *Typed[T, L]) Exists(ctx context.Context, namespace, name string, opts ...ReadOption) (bool, error) {
	if err := t.check(); err != nil {
		return false, err
	}
	return t.r.exists(ctx, namespace, name, readOpts(opts))
}

// Invalidate drops the object name in namespace and the Lists that could
// hold it, as Client.Invalidate does.
func (t *Typed[T, L]) Invalidate(namespace, name string) { t.r.invalidate(namespace, name) }

// Purge drops everything cached.
func (t *Typed[T, L]) Purge() { t.r.purge() }

// Stats reports what the cache has done.
func (t *Typed[T, L]) Stats() ResourceStats { return t.r.stats() }

// Close drops the cache; afterwards every method but Stats returns
// ErrClosed. Close must not run concurrently with other methods.
func (t *Typed[T, L]) Close() {
	if !t.closed.Swap(true) {
		t.r.close()
	}
}

// clientFor returns the namespace's client as a W, or an error saying it
// has no such method.
func clientFor[W any, T Object, L runtime.Object](t *Typed[T, L], namespace, method string) (W, error) {
	var zero W
	if err := t.check(); err != nil {
		return zero, err
	}
	c := t.forNamespace(namespace)
	w, ok := c.(W)
	if !ok {
		return zero, fmt.Errorf("k8sclient: %T has no %s method", c, method)
	}
	return w, nil
}

// Create creates obj in namespace through the typed client, then drops
// the object and the Lists that could hold it, as Client.Create does.
func (t *Typed[T, L]) Create(ctx context.Context, namespace string, obj T, opts metav1.CreateOptions) (T, error) {
	c, err := clientFor[creator[T]](t, namespace, "Create")
	if err != nil {
		var zero T
		return zero, err
	}
	out, err := c.Create(ctx, obj, opts)
	created := ""
	if err == nil {
		created = out.GetName() // differs from obj's with generateName
	}
	t.r.written(namespace, obj.GetName(), created)
	return out, err
}

// Update updates obj in namespace through the typed client, then drops the
// object and the Lists that could hold it, as Client.Update does.
func (t *Typed[T, L]) Update(ctx context.Context, namespace string, obj T, opts metav1.UpdateOptions) (T, error) {
	c, err := clientFor[updater[T]](t, namespace, "Update")
	if err != nil {
		var zero T
		return zero, err
	}
	out, err := c.Update(ctx, obj, opts)
	t.r.written(namespace, obj.GetName())
	return out, err
}

// Patch patches the object name in namespace through the typed client,
// then drops it and the Lists that could hold it, as Client.Patch does.
func (t *Typed[T, L]) Patch(ctx context.Context, namespace, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error) {
	c, err := clientFor[patcher[T]](t, namespace, "Patch")
	if err != nil {
		var zero T
		return zero, err
	}
	out, err := c.Patch(ctx, name, pt, data, opts, subresources...)
	t.r.written(namespace, name)
	return out, err
}

// Delete deletes the object name in namespace through the typed client,
// then drops it and the Lists that could hold it, as Client.Delete does.
func (t *Typed[T, L]) Delete(ctx context.Context, namespace, name string, opts metav1.DeleteOptions) error {
	c, err := clientFor[deleter](t, namespace, "Delete")
	if err != nil {
		return err
	}
	err = c.Delete(ctx, name, opts)
	t.r.written(namespace, name)
	return err
}
