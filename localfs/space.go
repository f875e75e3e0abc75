package localfs

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
)

// ensureFree makes room on the file system for need bytes, evicting if
// the free-space floor demands it, or fails with ErrNoSpace. The byte
// budget is checked when the write reserves its bytes (createTemp).
func (s *Store) ensureFree(ctx context.Context, need int64) error {
	free, err := freeBytes(s.root)
	if err != nil {
		return err
	}
	if short := need + s.opts.minFreeBytes - free; short > 0 {
		if _, err := s.evict(ctx, need, short); err != nil {
			return fmt.Errorf("file system has %d bytes free, need %d plus %d kept free: %w", free, need, s.opts.minFreeBytes, err)
		}
		if free, err = freeBytes(s.root); err != nil {
			return err
		}
		if free < need+s.opts.minFreeBytes {
			return fmt.Errorf("need %d bytes plus %d kept free, file system has %d: %w", need, s.opts.minFreeBytes, free, cache.ErrNoSpace)
		}
	}
	return nil
}

// noSpace marks a full disk or quota as ErrNoSpace, keeping the cause.
func noSpace(err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: %w", cache.ErrNoSpace, err)
	}
	return err
}

// freeBytes is the space available to an unprivileged writer under path.
func freeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("localfs: statfs %s: %w", path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// isNoSpace reports whether err means the disk or quota is full.
func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}
