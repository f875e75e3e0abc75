package crreader

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/buildcache/buildcache/k8sclient"
)

// ErrNoNamespace is returned by Get of a namespaced type with an empty
// namespace in its key: the API server has no such path, and answering
// its 404 would read as "not found" to client.IgnoreNotFound.
var ErrNoNamespace = errors.New("crreader: the object's type is namespaced, but the key has no namespace")

// Reader is a controller-runtime client.Reader over a k8sclient.Client:
// Get and List are answered from the Client's cache, which holds only the
// objects and Lists asked for, each for its TTL. Create it with New. It
// is safe for concurrent use; closing the Client is its owner's business.
type Reader struct {
	c      *k8sclient.Client
	scheme *runtime.Scheme
	mapper meta.RESTMapper
}

var _ client.Reader = (*Reader)(nil)

// New returns a Reader answering from c. scheme maps Go types to their
// GroupVersionKind (for typed objects such as *batchv1.Job; unstructured
// ones carry theirs), and mapper maps a kind to its resource and scope:
// pass the manager's (mgr.GetScheme(), mgr.GetRESTMapper()) or the ones
// the client was built with.
func New(c *k8sclient.Client, scheme *runtime.Scheme, mapper meta.RESTMapper) (*Reader, error) {
	switch {
	case c == nil:
		return nil, errors.New("crreader: New: nil *k8sclient.Client")
	case scheme == nil:
		return nil, errors.New("crreader: New: nil *runtime.Scheme")
	case mapper == nil:
		return nil, errors.New("crreader: New: nil meta.RESTMapper")
	}
	return &Reader{c: c, scheme: scheme, mapper: mapper}, nil
}

// Client returns the k8sclient.Client the Reader answers from, for its
// Stats, Invalidate and Purge.
func (r *Reader) Client() *k8sclient.Client { return r.c }

// Get reads the object key names into obj, which may be typed (it must
// then be registered in the scheme), *unstructured.Unstructured or
// *metav1.PartialObjectMetadata (both with their GroupVersionKind set).
// The namespace of key is ignored for cluster-scoped types, as
// controller-runtime's clients do.
//
// It is k8sclient.Client.Get: from memory within the TTL, otherwise one
// GET shared by concurrent callers. A missing object gives an error for
// which apierrors.IsNotFound holds (so client.IgnoreNotFound works),
// remembered for the negative TTL. With client.GetOptions.Raw carrying a
// ResourceVersion, the GET is sent to the API server as it is, uncached.
// obj is the caller's to change: for typed objects it is converted from
// the cached one, and an unstructured one is a deep copy unless
// UnsafeDisableDeepCopy is set.
func (r *Reader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	o := (&client.GetOptions{}).ApplyOptions(opts)
	gvr, namespaced, err := r.mapping(obj, false)
	if err != nil {
		return err
	}
	ns := key.Namespace
	if !namespaced {
		ns = ""
	} else if ns == "" {
		return fmt.Errorf("crreader: get %s %q: %w", gvr.Resource, key.Name, ErrNoNamespace)
	}
	if o.Raw != nil && o.Raw.ResourceVersion != "" {
		// An older or cached state was asked for: not what the cache holds.
		u, err := r.c.Dynamic().Resource(gvr).Namespace(ns).Get(ctx, key.Name, *o.Raw)
		if err != nil {
			return err
		}
		return into(u, obj, true)
	}
	u, err := r.c.Get(ctx, gvr, ns, key.Name, k8sclient.Shared())
	if err != nil {
		return err
	}
	return into(u, obj, o.UnsafeDisableDeepCopy == nil || !*o.UnsafeDisableDeepCopy)
}

// List reads the objects that opts select into list, a typed List (such
// as *batchv1.JobList), *unstructured.UnstructuredList or
// *metav1.PartialObjectMetadataList (both with their GroupVersionKind
// set, kind ending in "List"). client.InNamespace, MatchingLabels,
// MatchingFields and their selector forms make the cache key, as
// k8sclient.Client.List does; a List with client.Limit, client.Continue
// or Raw's ResourceVersion is sent to the API server as it is, uncached
// (it asks for a page or an older state, not for what the cache holds).
func (r *Reader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	o := (&client.ListOptions{}).ApplyOptions(opts)
	gvr, namespaced, err := r.mapping(list, true)
	if err != nil {
		return err
	}
	ns := o.Namespace
	if !namespaced {
		ns = ""
	}
	// AsListOptions fills Raw; work on a copy, not on the caller's Raw.
	if o.Raw != nil {
		raw := *o.Raw
		o.Raw = &raw
	}
	l, err := r.c.List(ctx, gvr, ns, *o.AsListOptions(), k8sclient.Shared())
	if err != nil {
		return err
	}
	return listInto(l, list, o.UnsafeDisableDeepCopy == nil || !*o.UnsafeDisableDeepCopy)
}

// Invalidate drops obj (by its type, namespace and name) and the Lists
// that could hold it from the cache: call it after writing obj through
// another client, such as the manager's.
func (r *Reader) Invalidate(obj client.Object) error {
	gvr, namespaced, err := r.mapping(obj, false)
	if err != nil {
		return err
	}
	ns := obj.GetNamespace()
	if !namespaced {
		ns = ""
	}
	r.c.Invalidate(gvr, ns, obj.GetName())
	return nil
}

// GVR returns the resource obj's type maps to, as the Reader's Get and
// List use it (a List type maps as its items do): the key of the Client's
// Stats, and what k8sclient.WithTTLFor and WithWatch take.
func (r *Reader) GVR(obj runtime.Object) (schema.GroupVersionResource, error) {
	_, isList := obj.(client.ObjectList)
	gvr, _, err := r.mapping(obj, isList)
	return gvr, err
}

// mapping returns obj's resource and whether it is namespaced.
func (r *Reader) mapping(obj runtime.Object, isList bool) (schema.GroupVersionResource, bool, error) {
	gvk, err := apiutil.GVKForObject(obj, r.scheme)
	if err != nil {
		return schema.GroupVersionResource{}, false, fmt.Errorf("crreader: %w", err)
	}
	if isList {
		// A List's kind is its items' with "List" appended, as
		// controller-runtime's clients assume too.
		gvk.Kind = strings.TrimSuffix(gvk.Kind, "List")
	}
	m, err := r.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return schema.GroupVersionResource{}, false, fmt.Errorf("crreader: %v: %w", gvk, err)
	}
	return m.Resource, m.Scope.Name() == meta.RESTScopeNameNamespace, nil
}

// into sets obj to the cached u: a deep copy or, without copy, u's map
// itself (unstructured only; typed objects are always converted).
func into(u *unstructured.Unstructured, obj client.Object, copy bool) error {
	switch out := obj.(type) {
	case *unstructured.Unstructured:
		if copy {
			u = u.DeepCopy()
		}
		out.SetUnstructuredContent(u.Object)
		return nil
	default:
		return fromUnstructured(u.Object, obj)
	}
}

func listInto(l *unstructured.UnstructuredList, list client.ObjectList, copy bool) error {
	switch out := list.(type) {
	case *unstructured.UnstructuredList:
		gvk := out.GroupVersionKind()
		if copy {
			l = l.DeepCopy()
			out.Object, out.Items = l.Object, l.Items
		} else {
			// The items are the cached ones, as asked; the list's own map
			// and slice are not, so that setting the GVK below, or
			// appending, leaves the cache alone.
			out.Object, out.Items = maps.Clone(l.Object), slices.Clone(l.Items)
		}
		out.SetGroupVersionKind(gvk) // the caller's, as it asked
		return nil
	default:
		return fromUnstructured(l.UnstructuredContent(), list)
	}
}

// fromUnstructured converts content into the typed out, which it zeroes
// first so that nothing of what out held before survives. The conversion
// copies: out shares nothing with content.
func fromUnstructured(content map[string]any, out runtime.Object) error {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("crreader: %T is not a non-nil pointer", out)
	}
	v.Elem().SetZero()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(content, out); err != nil {
		return fmt.Errorf("crreader: converting to %T: %w", out, err)
	}
	return nil
}
