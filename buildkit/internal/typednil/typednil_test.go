package typednil

import "testing"

func TestIs(t *testing.T) {
	type s struct{}
	var nilPtr *s
	var iface any = nilPtr
	for _, tc := range []struct {
		name string
		v    any
		want bool
	}{
		{"nil", nil, true},
		{"nil pointer", nilPtr, true},
		{"nil pointer in an interface", iface, true},
		{"pointer", &s{}, false},
		{"struct value", s{}, false},
		{"nil map is not a pointer", map[string]int(nil), false},
	} {
		if got := Is(tc.v); got != tc.want {
			t.Errorf("%s: Is = %v, want %v", tc.name, got, tc.want)
		}
	}
}
