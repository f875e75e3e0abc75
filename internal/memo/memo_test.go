package memo

import "testing"

func TestMapStartsOverWhenFull(t *testing.T) {
	m := Map[int, string]{Max: 2}
	m.Put(1, "a")
	m.Put(2, "b")
	if v, ok := m.Get(2); !ok || v != "b" {
		t.Fatalf("Get(2) = %q, %v", v, ok)
	}
	m.Put(3, "c") // full: starts over
	if _, ok := m.Get(1); ok {
		t.Error("a full memo kept what it had")
	}
	if v, ok := m.Get(3); !ok || v != "c" {
		t.Fatalf("Get(3) = %q, %v", v, ok)
	}
	m.Delete(3)
	if _, ok := m.Get(3); ok {
		t.Error("Delete kept the entry")
	}
}
