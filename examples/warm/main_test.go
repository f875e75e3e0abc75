package main

import "testing"

func TestWarm(t *testing.T) {
	if err := run(t.Context(), "", 4); err != nil {
		t.Fatal(err)
	}
}
