//go:build linux

package localfs_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/internal/testserver"
)

// mountTmpfs mounts a tmpfs with mount options opts, such as "size=8388608",
// on a fresh directory and unmounts it when the test ends
// (testserver.MountTmpfs).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	return testserver.MountTmpfs(t, opts)
}

// availBytes is what statfs says an unprivileged writer may still use.
func availBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// fillDisk writes path until the file system holding it is full, as
// another program on the same disk would.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for range 1 << 20 { // 4 GiB: far beyond any test's tmpfs
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", path, err)
			}
			return
		}
	}
	t.Fatalf("%s: wrote 4 GiB and the disk is not full", path)
}

// mountExt4 makes an ext4 file system of size bytes (1 KiB blocks, none
// reserved for root, linear directories: a name goes into any block with
// room for it, so when one name of a length finds none, no other of that
// length will) in an image file, loop-mounts it on a fresh directory
// and unmounts it when the test ends. It skips the test where that is not
// possible.
func mountExt4(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("this test loop-mounts an ext4 image, which needs root; run it as root (CI does)")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skipf("this test needs mkfs.ext4 (e2fsprogs): %v", err)
	}
	tmp := t.TempDir()
	img, dir := filepath.Join(tmp, "ext4.img"), filepath.Join(tmp, "ext4")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-m", "0", "-b", "1024", "-O", "^has_journal,^dir_index", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("this environment cannot loop-mount an image (no loop devices in a container?): mount -o loop: %v: %s", err, out)
	}
	unmountAtCleanup(t, dir)
	return dir
}

// unmountAtCleanup unmounts dir when the test ends, detaching it if it is
// still busy.
func unmountAtCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("umount %s: %v; detaching it (umount -l)", dir, err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("umount -l %s: %v", dir, err)
			}
		}
	})
}

// fillNames creates empty files named name(0), name(1), ... in dir until
// the file system refuses one with ENOSPC, and returns how many it
// created. More than most is a test failure: the disk was not full.
func fillNames(t *testing.T, dir string, name func(i int) string, most int) int {
	t.Helper()
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(dir, name(i)))
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return i
		}
		f.Close()
		if i >= most {
			t.Fatalf("%s took %d names without running out of space", dir, i+1)
		}
	}
}
