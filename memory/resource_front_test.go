package memory

import (
	"context"
	"testing"
)

// With the real clock, hits come from the front once an entry was read
// from ristretto; Invalidate, Refresh and Purge still take effect at once.
func TestResourceFrontInvalidation(t *testing.T) {
	ctx := t.Context()
	c := rcNew[string, int](t)
	val := 1
	load := func(context.Context) (int, error) { return val, nil }
	get := func() int {
		t.Helper()
		v, err := c.Get(ctx, "k", load)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	get()
	get() // promoted
	if _, ok := c.front.hot("k"); !ok {
		t.Fatal("a hit did not promote the entry to the front")
	}
	val = 2
	if v := get(); v != 1 {
		t.Fatalf("front hit = %d, want 1", v)
	}
	c.Invalidate("k")
	if v := get(); v != 2 {
		t.Fatalf("Get after Invalidate = %d, want 2", v)
	}
	get() // promoted again
	val = 3
	if v, err := c.Refresh(ctx, "k", load); err != nil || v != 3 {
		t.Fatalf("Refresh = %d, %v", v, err)
	}
	if v := get(); v != 3 {
		t.Fatalf("Get after Refresh = %d, want 3: the front kept the replaced entry", v)
	}
	get()
	val = 4
	c.Purge()
	if v := get(); v != 4 {
		t.Fatalf("Get after Purge = %d, want 4", v)
	}
	if s := c.Stats(); s.Loads != 4 {
		t.Fatalf("%d loads, want 4", s.Loads)
	}
}
