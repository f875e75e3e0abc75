package localfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A store takes two kinds of flock(2) lock, each on its own open file
// description, so that it excludes other goroutines of this process
// exactly as it excludes other processes, and a killed process never
// leaves one behind:
//
//   - its own, in .buildcache (gc.lock, index.lock): fileLock;
//   - BuildKit's index.json.lock, which client/ociindex takes with
//     gofrs/flock and removes after use: ociIndexLock.
//
// Both wait by polling a non-blocking flock, so that the wait ends when
// the context does; a blocking flock could not be interrupted.

// How long pollFlock sleeps after the first busy attempt, and the most
// it sleeps once the sleeps have doubled.
const (
	fileLockWaitFirst = 500 * time.Microsecond // our own locks may be held for a whole GC
	fileLockWaitMax   = 50 * time.Millisecond
	ociIndexWaitFirst = 50 * time.Microsecond // BuildKit holds its index lock briefly
	ociIndexWaitMax   = 5 * time.Millisecond
)

// pollFlock calls try until it returns anything but a busy lock (a
// LOCK_NB flock failing with EWOULDBLOCK or EINTR), sleeping between
// attempts (first, then doubling up to most), and gives up when ctx is
// done. try reports a busy lock by returning flockNB's error unchanged.
func pollFlock(ctx context.Context, path string, first, most time.Duration, try func() error) error {
	wait := first
	for {
		err := try()
		if !isBusy(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("localfs: waiting for lock %s: %w", path, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(wait*2, most)
	}
}

// flockNB tries once to lock f, shared or exclusive. A busy lock is
// returned as the bare errno, for pollFlock; any other failure is wrapped
// with path.
func flockNB(f *os.File, path string, exclusive bool) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	if err == nil || isBusy(err) {
		return err
	}
	return fmt.Errorf("localfs: locking %s: %w", path, err)
}

func isBusy(err error) bool {
	return errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EINTR)
}

// fileLock is a lock on one of the store's own lock files.
type fileLock struct{ f *os.File }

// lockFile takes a shared or exclusive lock on path, waiting until ctx is
// done.
func lockFile(ctx context.Context, path string, exclusive bool) (*fileLock, error) {
	f, err := openLockFile(path, os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("localfs: opening lock %s: %w", path, err)
	}
	if err := pollFlock(ctx, path, fileLockWaitFirst, fileLockWaitMax, func() error { return flockNB(f, path, exclusive) }); err != nil {
		f.Close()
		return nil, err
	}
	return &fileLock{f: f}, nil
}

// Unlock releases the lock by closing its descriptor, which is also why a
// killed process never leaves a lock behind. The lock file stays: removing
// it is what makes ociindex's lock unreliable.
func (l *fileLock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// tryLockFile takes a shared or exclusive lock on path if it is free now;
// a busy lock is (nil, nil).
func tryLockFile(path string, exclusive bool) (*fileLock, error) {
	f, err := openLockFile(path, os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("localfs: opening lock %s: %w", path, err)
	}
	if err := flockNB(f, path, exclusive); err != nil {
		f.Close()
		if isBusy(err) {
			return nil, nil
		}
		return nil, err
	}
	return &fileLock{f: f}, nil
}

// gc.lock is held shared by writers (a commit, the touch of a blob
// already stored, a lease naming a blob, Delete), for moments, and
// exclusively by collectors (GC, eviction), for a whole run. flock(2)
// queues no one, and a waiter polls: a collector that starts its next
// run as soon as it ends its last takes the lock again long before a
// polling writer looks, and a collector looping kept writers waiting
// for minutes. So a writer that finds the lock taken announces itself,
// holding gc.wait shared until it has gc.lock, and a collector starts a
// run only while nobody is announced: it waits until gc.wait is free,
// takes gc.lock, and if a writer announced itself meanwhile, lets go and
// starts over. A writer thus waits for the run in progress when it asked
// and, if that run ended in the instant between its first attempt and
// its announcement, for the one that began then: two runs at most, and
// one poll (fileLockWaitMax) after the last, however the collectors loop.

// lockGCShared takes gc.lock shared, as a writer, waiting until ctx is
// done.
func (s *Store) lockGCShared(ctx context.Context) (*fileLock, error) {
	if l, err := tryLockFile(s.gcLock, false); l != nil || err != nil {
		return l, err
	}
	w, err := lockFile(ctx, s.gcWait, false)
	if err != nil {
		return nil, err
	}
	defer w.Unlock()
	return lockFile(ctx, s.gcLock, false)
}

// lockGCExclusive takes gc.lock exclusively, as a collector, once no
// writer waits for it, waiting until ctx is done.
func (s *Store) lockGCExclusive(ctx context.Context) (*fileLock, error) {
	for {
		w, err := lockFile(ctx, s.gcWait, true) // the announced writers have had their turn
		if err != nil {
			return nil, err
		}
		w.Unlock()
		l, err := lockFile(ctx, s.gcLock, true)
		if err != nil {
			return nil, err
		}
		w, err = tryLockFile(s.gcWait, true)
		if w != nil {
			w.Unlock()
			return l, nil
		}
		l.Unlock() // a writer announced itself meanwhile: its turn first
		if err != nil {
			return nil, err
		}
	}
}

// ociIndexLockSuffix makes BuildKit's index lock file from index.json's
// path, as client/ociindex does.
const ociIndexLockSuffix = ".lock"

// ociIndexLock is a flock(2) on BuildKit's index.json.lock, the lock
// gofrs/flock takes for client/ociindex. f is nil when the lock file could
// not be opened for lack of permission (BuildKit's client, run by another
// user, made it 0600): then there is nothing to exclude it with, as
// ociindex itself skips the lock for reading in that case.
type ociIndexLock struct{ fileLock }

// lockOCIIndex takes BuildKit's index lock, shared or exclusive, waiting
// until ctx is done. ociindex removes the lock file after every use
// (os.RemoveAll after Unlock), so the file locked may already be unlinked,
// and whoever opens the path next creates and locks another one: a lock
// counts only if, once taken, its file is still the one at the path.
// Otherwise it is dropped and taken again at once. commitIndex checks
// again just before it renames, for an unlink that comes after the lock
// was taken. Each attempt opens the path afresh, for the same reason.
func lockOCIIndex(ctx context.Context, path string, exclusive bool) (*ociIndexLock, error) {
	var l *ociIndexLock
	err := pollFlock(ctx, path, ociIndexWaitFirst, ociIndexWaitMax, func() error {
		for {
			f, err := openLockFile(path, os.O_RDONLY)
			if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
				l = &ociIndexLock{}
				return nil
			}
			if err != nil {
				return fmt.Errorf("localfs: opening lock %s: %w", path, err)
			}
			if err := flockNB(f, path, exclusive); err != nil {
				f.Close()
				return err
			}
			if held := (&ociIndexLock{fileLock{f: f}}); held.stillAt(path) {
				l = held
				return nil
			}
			f.Close() // removed under us: lock the file now at the path
		}
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// openLockFile opens or creates a lock file, never through a link: a link
// at its path (to a file outside the store, or dangling, which O_CREATE
// would create) is removed and a lock file of our own made instead.
func openLockFile(path string, mode int) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, mode|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o644)
		if err == nil {
			if info, serr := f.Stat(); serr == nil && !info.Mode().IsRegular() {
				f.Close()
				return nil, fmt.Errorf("%s is a %s: %w", path, modeName(info.Mode()), errNotRegular)
			}
			return f, nil
		}
		if !errors.Is(err, unix.ELOOP) || attempt > 0 {
			return nil, err
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is a symbolic link that cannot be removed: %w", path, err)
		}
	}
}

// stillAt reports whether the locked file is the one at path.
func (l *ociIndexLock) stillAt(path string) bool {
	if l.f == nil {
		return true
	}
	var held, now unix.Stat_t
	if unix.Fstat(int(l.f.Fd()), &held) != nil || unix.Lstat(path, &now) != nil {
		return false
	}
	return held.Dev == now.Dev && held.Ino == now.Ino
}

// Unlock releases the lock, as fileLock's does; a nil lock is a no-op.
func (l *ociIndexLock) Unlock() {
	if l != nil {
		l.fileLock.Unlock()
	}
}

// tryLockExclusive reports whether f could be locked exclusively right now;
// it is how a sweep tells a dead writer's temp file from a live one.
func tryLockExclusive(f *os.File) bool { return lockExclusive(f) == nil }

// lockExclusive locks a temp file for the writer that owns it.
func lockExclusive(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}
