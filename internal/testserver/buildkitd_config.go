package testserver

import (
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
	return startForTest(t, "buildkitd", func(b *Buildkitd) string { return b.Root },
		func() (*Buildkitd, error) { return launchBuildkitd("--config", path) })
}
