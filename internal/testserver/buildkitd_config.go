package testserver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// StartBuildkitdWithConfig starts a buildkitd of its own for this test,
// as StartBuildkitd does, with config as its buildkitd.toml (for example
// [registry."host"] mirrors = […]: tests of registry mirrors).
func StartBuildkitdWithConfig(t testing.TB, config string) *Buildkitd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "buildkitd.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := launchBuildkitd("--config", path)
	if err != nil {
		if errors.Is(err, errUnavailable) {
			unavailable(t, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("buildkitd log (%s):\n%s", b.Root, b.Log())
		}
		b.Stop()
	})
	return b
}
