package localfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
)

// A lease is a file in .buildcache/leases that its holder keeps locked
// (flock, exclusive) for as long as the lease lasts, and in which it names,
// one hex digest a line, every blob it is asked about under the lease.
// Collectors hold gc.lock exclusively; they read every lease file they
// cannot lock and keep the blobs named there. A lease file they can lock
// has no live holder (released, or its process died: the kernel drops a
// dead process's locks) and is removed. A holder names a blob while it
// holds gc.lock shared and before it looks at the blob or renames it into
// place, so a collector either ran before (and the holder sees the blob
// gone, and fetches it) or sees the name.
const leaseDirName = "leases"

type leaseKey struct{}

type lease struct {
	s    *Store
	f    *os.File
	path string // in .buildcache/leases

	mu    sync.Mutex
	named map[string]bool
	ended bool
}

// Lease implements cache.Leaser. The lease file is made in the temp
// directory, locked, and only then renamed into .buildcache/leases, so a
// collector never finds it unlocked while its holder lives.
func (s *Store) Lease(ctx context.Context) (context.Context, func() error, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("localfs: lease: %w", err)
	}
	dir := filepath.Join(s.root, privateDir, leaseDirName)
	if err := ensureDir(dir, true); err != nil {
		return nil, nil, fmt.Errorf("localfs: lease: %w", noSpace(err))
	}
	f, err := os.CreateTemp(s.tmpDir, "lease-"+strconv.Itoa(os.Getpid())+"-*"+tmpSuffix)
	if err != nil {
		return nil, nil, fmt.Errorf("localfs: lease: %w", noSpace(err))
	}
	tmp := f.Name()
	err = lockExclusive(f)
	if err == nil {
		err = f.Chmod(0o644) // collectors run by other users read it
	}
	final := filepath.Join(dir, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(tmp), "lease-"), tmpSuffix))
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		f.Close()
		return nil, nil, fmt.Errorf("localfs: lease: %w", noSpace(err))
	}
	l := &lease{s: s, f: f, path: final, named: map[string]bool{}}
	return context.WithValue(ctx, leaseKey{}, l), l.release, nil
}

// release ends the lease: the file goes, then the lock.
func (l *lease) release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return nil
	}
	l.ended = true
	err := os.Remove(l.path)
	l.f.Close()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("localfs: releasing lease: %w", err)
	}
	return nil
}

// leaseOf returns the lease of this store that ctx carries, if any.
func (s *Store) leaseOf(ctx context.Context) *lease {
	l, _ := ctx.Value(leaseKey{}).(*lease)
	if l == nil || l.s != s {
		return nil
	}
	return l
}

// needs reports whether d is not yet named in the lease.
func (l *lease) needs(hex string) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.ended && !l.named[hex]
}

// name adds d to the lease file. The caller holds gc.lock shared. A lease
// already ended protects nothing more; that is not an error for the
// caller (a download shared with a pull that has gone).
func (l *lease) name(hex string) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended || l.named[hex] {
		return nil
	}
	if _, err := l.f.WriteString(hex + "\n"); err != nil {
		return fmt.Errorf("localfs: recording %s in lease: %w", hex, noSpace(err))
	}
	l.named[hex] = true
	return nil
}

// underLease runs fn, which looks at blob d, after naming d in ctx's
// lease under the shared gc.lock, if ctx carries a lease that does not
// name d yet; otherwise it just runs fn.
func (s *Store) underLease(ctx context.Context, d v1.Hash, fn func() error) error {
	l := s.leaseOf(ctx)
	if !l.needs(d.Hex) {
		return fn()
	}
	gl, err := s.lockGCShared(ctx)
	if err != nil {
		return err
	}
	defer gl.Unlock()
	if err := l.name(d.Hex); err != nil {
		return err
	}
	return fn()
}

// leasedBlobs returns the blobs that live leases name, and removes the
// lease files of holders that are gone. The caller holds gc.lock
// exclusively.
func (s *Store) leasedBlobs() map[string]bool {
	leased := map[string]bool{}
	dir, err := openDirNoFollow(s.root, privateDir, leaseDirName)
	if err != nil {
		return leased // no lease was ever taken here
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return leased
	}
	dfd := int(dir.Fd())
	for _, name := range names {
		fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ELOOP) {
				_ = unix.Unlinkat(dfd, name, 0) // a link is no lease
			}
			continue
		}
		f := os.NewFile(uintptr(fd), name)
		if unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) == nil {
			_ = unix.Unlinkat(dfd, name, 0) // nobody holds it
			f.Close()
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if hex := sc.Text(); cache.ValidateDigest(v1.Hash{Algorithm: "sha256", Hex: hex}) == nil {
				leased[hex] = true
			}
		}
		f.Close()
	}
	return leased
}
