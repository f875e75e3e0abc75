// Package staticbuild builds the buildcache command as it ships: static
// (no cgo), without this machine's paths, a VCS stamp or symbol tables,
// for linux on a baseline CPU. The image (deploy/image) is built so, and
// tests that run the command as a process build it the same way: what
// they run is what ships, and a fresh machine compiles the command's
// packages once for both instead of once per set of flags.
package staticbuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Package is the command's import path.
const Package = "github.com/buildcache/buildcache/cmd/buildcache"

// Build builds the command for linux/goarch at out, from the module at
// moduleDir. version, if not empty, is what `buildcache --version` prints.
func Build(ctx context.Context, moduleDir, goarch, version, out string) error {
	ldflags := "-s -w"
	if version != "" {
		ldflags += " -X main.version=" + version
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", ldflags, "-o", out, Package)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch,
		"GOFLAGS=", "GOAMD64=v1", "GOARM64=v8.0", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for linux/%s: %v\n%s", Package, goarch, err, b)
	}
	return nil
}

// ForTest builds the command for this machine in a directory the test
// removes, or returns $BUILDCACHE_BIN if set. Its packages compile once
// per machine (the build cache); each call links.
func ForTest(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("BUILDCACHE_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(tb.TempDir(), "buildcache")
	// The working directory is inside the module: go build finds it.
	if err := Build(tb.Context(), "", runtime.GOARCH, "", bin); err != nil { // ends with the test
		tb.Fatal(err)
	}
	return bin
}
