package k8sclient

import (
	"reflect"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// Estimates of the heap an unstructured value holds on a 64-bit machine
// with Go's swiss-table maps. They need not be exact, only close, so that
// WithMaxCost reads as bytes; TestSizeEstimates checks them against the
// heap a decoded List really takes.
const (
	sizeMap      = 48       // a map's header
	sizeMapGroup = 8 + 8*32 // a group of 8 slots: control word, string keys, any values
	sizeTable    = 48       // each table of a map beyond 8 entries
	sizeIface    = 16       // an any in a slice
	sizeString   = 16       // a string header boxed in an any
	sizeSlice    = 24       // a slice header boxed in an any
	sizeScalar   = 8        // a number boxed in an any
)

// unstructuredSize estimates the heap held by an unstructured value.
func unstructuredSize(v any) int64 {
	switch v := v.(type) {
	case map[string]any:
		n := int64(sizeMap)
		switch {
		case len(v) == 0:
			// No group until the first entry.
		case len(v) <= 8:
			n += sizeMapGroup
		default:
			// Tables are kept at most 7/8 full, in powers of two.
			slots := int64(8)
			for slots*7/8 < int64(len(v)) {
				slots *= 2
			}
			n += sizeTable + slots/8*sizeMapGroup
		}
		for k, x := range v {
			n += roundUp8(len(k)) + unstructuredSize(x)
		}
		return n
	case []any:
		n := int64(sizeSlice) + int64(cap(v))*sizeIface
		for _, x := range v {
			n += unstructuredSize(x)
		}
		return n
	case string:
		return sizeString + roundUp8(len(v))
	case bool, nil:
		return 0 // static
	default:
		return sizeScalar
	}
}

func roundUp8(n int) int64 { return int64(n+7) &^ 7 }

// typedSize estimates the heap held by a typed object or list: the size of
// everything reachable from it (structs, slices, strings, maps), walked
// with reflect.
func typedSize(obj any) int64 {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return 0
	}
	return int64(v.Type().Elem().Size()) + deepSize(v.Elem())
}

var locationType = reflect.TypeFor[time.Location]()

// deepSize is the heap reachable from v, v's own inline bytes excluded.
// Shared pointers are counted once per reference; API objects have few.
func deepSize(v reflect.Value) int64 {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() || v.Type().Elem() == locationType {
			return 0 // time zones are shared globals
		}
		return int64(v.Type().Elem().Size()) + deepSize(v.Elem())
	case reflect.Struct:
		if !hasIndirect(v.Type()) {
			return 0
		}
		var n int64
		for i := range v.NumField() {
			n += deepSize(v.Field(i))
		}
		return n
	case reflect.Array:
		if !hasIndirect(v.Type()) {
			return 0
		}
		var n int64
		for i := range v.Len() {
			n += deepSize(v.Index(i))
		}
		return n
	case reflect.Slice:
		if v.IsNil() {
			return 0
		}
		n := int64(v.Cap()) * int64(v.Type().Elem().Size())
		if hasIndirect(v.Type().Elem()) {
			for i := range v.Len() {
				n += deepSize(v.Index(i))
			}
		}
		return n
	case reflect.String:
		return roundUp8(v.Len())
	case reflect.Map:
		if v.IsNil() {
			return 0
		}
		slot := int64(v.Type().Key().Size() + v.Type().Elem().Size())
		slots := int64(8)
		for slots*7/8 < int64(v.Len()) {
			slots *= 2
		}
		n := sizeMap + slots*slot + slots
		for it := v.MapRange(); it.Next(); {
			n += deepSize(it.Key()) + deepSize(it.Value())
		}
		return n
	case reflect.Interface:
		if v.IsNil() {
			return 0
		}
		e := v.Elem()
		return int64(e.Type().Size()) + deepSize(e)
	default:
		return 0
	}
}

// indirect memoises hasIndirect by type.
var indirect sync.Map // reflect.Type -> bool

// hasIndirect reports whether a value of type t can refer to memory
// outside itself (through a pointer, slice, string, map or interface).
func hasIndirect(t reflect.Type) bool {
	if b, ok := indirect.Load(t); ok {
		return b.(bool)
	}
	var b bool
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.String, reflect.Map, reflect.Interface, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		b = true
	case reflect.Struct:
		for i := range t.NumField() {
			if hasIndirect(t.Field(i).Type) {
				b = true
				break
			}
		}
	case reflect.Array:
		b = t.Len() > 0 && hasIndirect(t.Elem())
	}
	indirect.Store(t, b)
	return b
}

// prepUnstructured drops managedFields unless o keeps them, and applies o's
// transform.
func (o *options) prepUnstructured(u *unstructured.Unstructured) {
	if !o.keepManaged {
		unstructured.RemoveNestedField(u.Object, "metadata", "managedFields")
	}
	if o.transform != nil {
		o.transform(u)
	}
}

// prepTyped is prepUnstructured for typed objects.
func (o *options) prepTyped(obj runtime.Object) {
	if !o.keepManaged {
		if a, err := meta.Accessor(obj); err == nil {
			a.SetManagedFields(nil)
		}
	}
	if o.transform != nil {
		o.transform(obj)
	}
}

// eachListItem calls fn with every item of a typed list, in place.
func eachListItem(l runtime.Object, fn func(runtime.Object)) error {
	return meta.EachListItem(l, func(o runtime.Object) error {
		fn(o)
		return nil
	})
}
