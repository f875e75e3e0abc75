// Package depcheck lists what a package links, for the tests that keep a
// package light (as go-containerregistry's pkg/registry/depcheck_test.go
// does for its own): the contract, the memory tier, metrics, buildkit.
package depcheck

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// Deps returns every package pkg links (go list -deps), pkg included. A
// test skips when there is no go command to ask.
func Deps(t testing.TB, pkg string) []string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies with")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// Forbid fails t for each package pkg links whose import path is one of
// exact or starts with one of prefixes.
func Forbid(t testing.TB, pkg string, prefixes, exact []string) {
	t.Helper()
	for _, dep := range Deps(t, pkg) {
		bad := false
		for _, p := range prefixes {
			bad = bad || strings.HasPrefix(dep, p)
		}
		for _, e := range exact {
			bad = bad || dep == e
		}
		if bad {
			t.Errorf("%s depends on %s", pkg, dep)
		}
	}
}
