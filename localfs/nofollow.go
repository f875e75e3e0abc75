package localfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// The store never reads, writes, touches or removes anything outside its
// directory through a symbolic link that someone sharing the directory
// put in place of one of its entries: files are opened with O_NOFOLLOW
// and checked to be regular files, entries are examined with Lstat, and
// times are set through a descriptor or without following links. A blob
// entry that is not a regular file is corrupt: it is reported and the
// link (never its target) is removed or replaced.

// errNotRegular marks a store entry that is a symbolic link, a directory,
// a FIFO or anything else but a regular file.
var errNotRegular = errors.New("not a regular file")

// openRegular opens path for reading without following a link at its last
// component and without blocking on a FIFO, and requires a regular file.
func openRegular(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, nil, fmt.Errorf("%s is a symbolic link: %w", path, errNotRegular)
		}
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is a %s: %w", path, modeName(info.Mode()), errNotRegular)
	}
	return f, info, nil
}

// readRegular reads a whole small file of the store, such as index.json,
// refusing a link or a special file.
func readRegular(path string) ([]byte, error) {
	f, _, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// lstatRegular is Lstat that requires a regular file.
func lstatRegular(path string) (os.FileInfo, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s: %w", path, modeName(info.Mode()), errNotRegular)
	}
	return info, nil
}

func modeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// touchFile sets an open file's times, never a link's target.
func touchFile(f *os.File, t time.Time) {
	tv := unix.NsecToTimeval(t.UnixNano())
	_ = unix.Futimes(int(f.Fd()), []unix.Timeval{tv, tv}) // best effort, as a touch is
}

// touchPath sets the times of the entry at path itself: a link put there
// since it was checked is touched, not what it points to.
func touchPath(path string, t time.Time) {
	ts := unix.NsecToTimespec(t.UnixNano())
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// ensureDir makes path a real directory. An entry that is something else
// (a link to elsewhere, a file) is an error, or, with replace, removed
// (the link itself) and replaced by a directory.
func ensureDir(path string, replace bool) error {
	for attempt := 0; ; attempt++ {
		info, err := os.Lstat(path)
		switch {
		case err == nil && info.IsDir():
			return nil
		case err == nil && !replace:
			return fmt.Errorf("%s is a %s, not a directory: refusing to use it", path, modeName(info.Mode()))
		case err == nil:
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s is a %s, not a directory, and cannot be removed: %w", path, modeName(info.Mode()), err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		err = os.Mkdir(path, 0o755)
		if err == nil || (errors.Is(err, fs.ErrExist) && attempt < 3) {
			continue // check what is there now: another process may have made it
		}
		return err
	}
}

// openDirNoFollow opens root/rel as a directory, following no link in rel.
func openDirNoFollow(root string, rel ...string) (*os.File, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	p := root
	for _, name := range rel {
		p = filepath.Join(p, name)
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		fd = next
	}
	return os.NewFile(uintptr(fd), p), nil
}

// irregularBlobs lists the entries in blobs/sha256 that are named like a
// blob but are not regular files.
func (s *Store) irregularBlobs() ([]v1.Hash, error) {
	entries, err := os.ReadDir(s.blobDir)
	if err != nil {
		return nil, fmt.Errorf("localfs: scanning %s: %w", s.blobDir, err)
	}
	var out []v1.Hash
	for _, e := range entries {
		d := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if !e.Type().IsRegular() && cache.ValidateDigest(d) == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// dropIrregular removes the entry for d if it is not a regular file (the
// link itself, or an empty directory), counts a corruption, and returns
// an error wrapping ErrCorrupt that names why, and whether it removed it.
func (s *Store) dropIrregular(op string, d v1.Hash, why error) (removed bool, err error) {
	s.stats.Corruptions.Add(1)
	unlock := s.lockDigest(d.Hex)
	defer unlock()
	p := s.blobPath(d)
	suffix := ""
	if info, err := os.Lstat(p); err == nil && !info.Mode().IsRegular() && os.Remove(p) == nil {
		removed, suffix = true, " (entry removed)"
	}
	return removed, fmt.Errorf("localfs: %s %s: %w: %w%s", op, d, cache.ErrCorrupt, why, suffix)
}
