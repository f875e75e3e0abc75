//go:build linux

package testserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// MountTmpfs mounts a tmpfs with mount options opts, such as
// "size=8388608" (`mount -t tmpfs -o OPTS tmpfs DIR`), on a fresh
// directory and unmounts it when the test ends (detaching it if it is
// still busy): a real file system to fill up (ENOSPC) or to remount
// read-only (RemountTmpfs). Not root, the test skips (fails under CI,
// which runs as root); root in a container that forbids mounting, it
// skips.
func MountTmpfs(t testing.TB, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, errors.New("mounting a tmpfs needs root"))
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			t.Skipf("root, but this environment forbids mounting a tmpfs on %s (a container without CAP_SYS_ADMIN?): %v", dir, err)
		}
		t.Fatalf("mount -t tmpfs -o %s tmpfs %s: %v", opts, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("umount %s: %v; detaching it (umount -l)", dir, err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("umount -l %s: %v", dir, err)
			}
		}
	})
	return dir
}

// RemountTmpfs remounts the tmpfs MountTmpfs mounted on dir with opts,
// read-only if readOnly, else read-write.
func RemountTmpfs(t testing.TB, dir, opts string, readOnly bool) {
	t.Helper()
	flags := uintptr(unix.MS_REMOUNT)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", dir, "", flags, opts); err != nil {
		t.Fatalf("%v", fmt.Errorf("remount %s (read-only %v): %w", dir, readOnly, err))
	}
}
