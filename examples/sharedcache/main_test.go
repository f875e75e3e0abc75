package main

import "testing"

func TestSharedCache(t *testing.T) {
	if err := run(t.Context(), "", "shared", 3, 1); err != nil {
		t.Fatal(err)
	}
}
