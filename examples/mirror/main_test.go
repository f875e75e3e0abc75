package main

import (
	"bytes"
	"regexp"
	"testing"
)

// The example on a small image: every pull must succeed, the warm pull
// must ask the upstream one HEAD only, and the pull with the upstream
// stopped must be served.
func TestMirror(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), &out, t.TempDir(), 16); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		`(?m)^cold .*GET blob`,
		`(?m)^warm .* 1 HEAD manifest$`,
		`(?m)^upstream stopped .*HEAD manifest`,
	} {
		if !regexp.MustCompile(want).Match(out.Bytes()) {
			t.Errorf("output does not match %s:\n%s", want, out.String())
		}
	}
}
