// Package typednil tells a nil interface value and a nil pointer in an
// interface apart from a usable value, for the callers in buildkit and
// buildkit/cacheentry that take a cache.LayerCache and must refuse a
// (*localfs.Store)(nil): it has the methods but nothing behind them.
package typednil

import "reflect"

// Is reports whether v is nil or a nil pointer in an interface.
func Is(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
