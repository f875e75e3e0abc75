package main

import "testing"

// The README's main job, on a small image: every step must succeed and the
// store must verify (run returns an error otherwise).
func TestQuickstart(t *testing.T) {
	if err := run(t.Context(), t.TempDir(), 4); err != nil {
		t.Fatal(err)
	}
}
