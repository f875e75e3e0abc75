//go:build linux

package localfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
)

// probe runs ProbeWrite and checks that it left no file in the temp
// directory, whatever its outcome.
func probe(t *testing.T, s *localfs.Store) error {
	t.Helper()
	err := s.ProbeWrite(t.Context())
	left, rerr := os.ReadDir(filepath.Join(s.Dir(), ".buildcache", "tmp"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(left) != 0 {
		t.Fatalf("ProbeWrite (%v) left %d entries in the temp directory, the first %s", err, len(left), left[0].Name())
	}
	return err
}

// storeOnTmpfs opens a store on a tmpfs of its own, checks that it
// passes the probe, and returns the mount point with it.
func storeOnTmpfs(t *testing.T) (string, *localfs.Store) {
	t.Helper()
	mnt := mountTmpfs(t, tmpfsOpts)
	s, err := localfs.Open(filepath.Join(mnt, "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := probe(t, s); err != nil {
		t.Fatalf("probe of a new store: %v", err)
	}
	return mnt, s
}

// A full file system fails the probe with ErrNoSpace, and it passes again
// once there is room.
func TestProbeWriteFullDisk(t *testing.T) {
	mnt, s := storeOnTmpfs(t)
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler)
	err := probe(t, s)
	if !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("probe on a full disk: %v, want ErrNoSpace", err)
	}
	t.Logf("full disk: %v", err)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := probe(t, s); err != nil {
		t.Fatalf("probe once there is room again: %v", err)
	}
}

// A file system remounted read-only under an open store fails the probe
// (EROFS), which passes again once it is writable.
func TestProbeWriteReadOnly(t *testing.T) {
	mnt, s := storeOnTmpfs(t)
	testserver.RemountTmpfs(t, mnt, tmpfsOpts, true)
	err := s.ProbeWrite(t.Context())
	testserver.RemountTmpfs(t, mnt, tmpfsOpts, false)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("probe on a read-only file system: %v, want EROFS", err)
	}
	if err := probe(t, s); err != nil {
		t.Fatalf("probe once writable again: %v", err)
	}
}
