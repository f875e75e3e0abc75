package testserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireTool finds a client binary (cosign, the conformance suite) from
// env, on PATH, or (under a name of scripts/test's) in $(go env
// GOPATH)/bin. Missing, the test skips, saying hint (how to install it),
// and fails under CI, where scripts/test installs every one.
func RequireTool(t testing.TB, env, name, hint string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			p := filepath.Join(dir, "bin", name)
			if info, err := os.Stat(p); err == nil && !info.IsDir() {
				return p
			}
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI: %s not found: %s", name, hint)
	}
	t.Skipf("skipping: %s not found: %s (scripts/test installs it)", name, hint)
	return ""
}
