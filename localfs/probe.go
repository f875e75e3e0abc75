package localfs

import (
	"context"
	"fmt"
	"os"

	"github.com/buildcache/buildcache/cache"
)

var _ cache.WriteProber = (*Store)(nil)

// probeBytes is what ProbeWrite writes: one page, so that a file system
// with no free block refuses it (a tmpfs allocates pages on write).
const probeBytes = 4096

// ProbeWrite implements cache.WriteProber: it creates a temp file in the
// store's temp directory (.buildcache/tmp, where every write starts),
// writes 4 KiB to it, syncs it and removes it, counting nothing and
// evicting nothing. It fails with ErrClosed after Close, with an error
// wrapping cache.ErrNoSpace when the file system is full (ENOSPC,
// EDQUOT), and with the file system's error otherwise (EROFS, EACCES, a
// temp directory gone). The free-space floor (WithMinFreeBytes) is not
// checked: a write below it evicts to make room, so a store at its floor
// is still writable. A probe file left by a process killed meanwhile is
// swept like any other temp file.
func (s *Store) ProbeWrite(ctx context.Context) error {
	s.writes.mu.Lock()
	closed := s.writes.closed
	s.writes.mu.Unlock()
	if closed {
		return fmt.Errorf("localfs: probe write: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localfs: probe write: %w", err)
	}
	f, err := os.CreateTemp(s.tmpDir, "probe-*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("localfs: probe write: %w", noSpace(err))
	}
	name := f.Name()
	_, err = f.Write(make([]byte, probeBytes))
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("localfs: probe write: %w", noSpace(err))
	}
	return nil
}
