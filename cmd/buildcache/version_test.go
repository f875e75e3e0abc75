package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestVersionFlag(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	for _, tc := range []struct{ set, want string }{
		{"v1.2.3", "buildcache v1.2.3\n"},
		{"", "buildcache "}, // from the build information: (devel) in a test
	} {
		version = tc.set
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"--version"}, &out, &errb); code != 0 {
			t.Fatalf("--version (version %q): exit %d, stderr %q", tc.set, code, errb.String())
		}
		if !strings.HasPrefix(out.String(), tc.want) || strings.Count(out.String(), "\n") != 1 {
			t.Errorf("--version (version %q) printed %q, want %q…", tc.set, out.String(), tc.want)
		}
	}
}
