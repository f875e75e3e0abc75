//go:build linux

package nodeconfig_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/nodeconfig"
)

// On a full disk Apply fails and leaves the file containerd reads as it
// was, and no temp file.
func TestApplyOnFullDisk(t *testing.T) {
	dir := testserver.MountTmpfs(t, "size=65536")
	mustApply(t, dir, []nodeconfig.Action{nodeconfig.Written}, hub)
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	before := stateOf(t, path)
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 4096))
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	_, err = nodeconfig.Apply(dir, "http://127.0.0.1:5001", []nodeconfig.Registry{hub})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Apply on a full disk = %v, want ENOSPC", err)
	}
	if got := stateOf(t, path); got != before {
		t.Errorf("the failed Apply changed hosts.toml: %+v, was %+v", got, before)
	}
	noTemps(t, filepath.Join(dir, "docker.io"))
}
