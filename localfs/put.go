package localfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/ctxio"
)

// copyBufSize is large enough that syscalls and hashing setup are noise
// next to the bytes moved.
const copyBufSize = 1 << 20

// writebackChunk is how much a Put writes before it starts that part's
// writeback, so disk writes overlap the rest of the download.
const writebackChunk = 8 << 20

// spaceCheckInterval is how many bytes a Put writes between checks that
// the free-space floor and the byte budget still hold: a statfs every
// 4 MiB is noise next to the writes, and bounds how far below
// WithMinFreeBytes a stream of unknown or wrong size can take the disk.
const spaceCheckInterval = 4 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Put implements cache.Putter. The bytes are hashed while they are written
// to a temp file beside the blobs; the file is synced and renamed into
// place only if digest and size match, and the rename is synced too, so a
// crash, a full disk or a cancellation leaves the previous state and no
// partial blob, and a Put that returned survives a crash.
func (s *Store) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	return s.put(ctx, d, size, r, true)
}

// PutDeferred is Put except that the blob's directory entry is not synced:
// SyncBlobs does that, once for a group of blobs, instead of one directory
// fsync per blob. The bytes are synced before the rename as in Put, so
// after a crash a blob is there complete or not at all; what a crash
// before SyncBlobs can lose is the rename, i.e. the whole blob.
//
// Call SyncBlobs before recording anything that must find the blobs after
// a crash, such as a root in index.json. A resolver pulling an image does:
// its layers, configs and manifests with PutDeferred, one SyncBlobs, then
// the root.
func (s *Store) PutDeferred(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	return s.put(ctx, d, size, r, false)
}

// SyncBlobs makes every blob renamed into place so far durable, whoever
// wrote it: one fsync of the blobs directory. It ends a group of
// PutDeferred calls.
func (s *Store) SyncBlobs(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localfs: syncing blobs: %w", err)
	}
	if err := syncDir(s.blobDir); err != nil {
		s.stats.Errors.Add(1)
		return fmt.Errorf("localfs: syncing blobs: %w", noSpace(err))
	}
	return nil
}

func (s *Store) put(ctx context.Context, d v1.Hash, size int64, r io.Reader, syncRename bool) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localfs: put %s: %w", d, err)
	}
	if s.opts.maxBytes > 0 && size > s.opts.maxBytes {
		return fmt.Errorf("localfs: put %s: %d bytes exceed the store's budget of %d: %w", d, size, s.opts.maxBytes, cache.ErrNoSpace)
	}
	ctx, slot, end, err := s.beginWrite(ctx)
	if err != nil {
		return fmt.Errorf("localfs: put %s: %w", d, err)
	}
	defer end()
	unlock := s.lockDigest(d.Hex)
	defer unlock()

	if stored, err := s.keepStored(ctx, d, size); err != nil || stored {
		return err
	}
	if err := s.ensureFree(ctx, max(size, 0)); err != nil {
		return fmt.Errorf("localfs: put %s: %w", d, err)
	}
	n, err := s.write(ctx, slot, d, size, r, syncRename)
	if err != nil {
		if !errors.Is(err, cache.ErrDigestMismatch) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			s.stats.Errors.Add(1)
		}
		return fmt.Errorf("localfs: put %s: %w", d, err)
	}
	s.stats.BytesIn.Add(uint64(n))
	return nil
}

// spaceWhileWriting checks, with written bytes in the temp file so far,
// that the free-space floor holds and that the blob still fits the byte
// budget: the check before the write trusts the size given, which may be
// unknown (-1) or a lie that the hash only exposes at the end.
func (s *Store) spaceWhileWriting(written int64) error {
	if s.opts.maxBytes > 0 && written > s.opts.maxBytes {
		return fmt.Errorf("%d bytes written exceed the store's budget of %d: %w", written, s.opts.maxBytes, cache.ErrNoSpace)
	}
	if s.opts.minFreeBytes == 0 {
		return nil // a full disk fails the write itself
	}
	free, err := freeBytes(s.root)
	if err != nil {
		return err
	}
	if free < s.opts.minFreeBytes {
		return fmt.Errorf("after %d bytes written the file system has %d bytes free, below the %d kept free: %w", written, free, s.opts.minFreeBytes, cache.ErrNoSpace)
	}
	return nil
}

// write streams r into a locked temp file, reserving its bytes in the
// usage record first (evicting if the budget demands it), and renames it
// into place, syncing the rename if syncRename. The temp file is slot's,
// which abandons it when ctx is done (writes.go).
func (s *Store) write(ctx context.Context, slot *writeSlot, d v1.Hash, size int64, r io.Reader, syncRename bool) (int64, error) {
	f, err := slot.create(ctx, max(size, 0), func() (*os.File, error) { return s.createTemp(ctx, d.Hex[:16], max(size, 0)) })
	if err != nil {
		return 0, err
	}
	n, err := s.fill(ctx, f, d, size, r)
	if err := s.place(ctx, slot, f, d, n, err, syncRename); err != nil {
		return 0, err
	}
	return n, nil
}

// place renames slot's temp file f, holding n bytes of blob d, into
// place, or drops it if err is not nil (and returns err). A blob whose
// size was unknown reserves its bytes now that they are known.
func (s *Store) place(ctx context.Context, slot *writeSlot, f *os.File, d v1.Hash, n int64, err error, syncRename bool) error {
	return s.finish(ctx, slot, func(tmp string, reserved int64) (string, int64, error) {
		if err != nil {
			return tmp, reserved, err
		}
		if n > reserved {
			grown, err := s.growReservation(ctx, tmp, reserved, n)
			if grown != "" {
				tmp = grown
			}
			if err != nil {
				return tmp, reserved, err
			}
			reserved = n
		}
		return tmp, reserved, s.commit(ctx, f, tmp, s.blobPath(d), syncRename, reserved, n)
	})
}

// fill streams r into the temp file f, checking that it holds d, of
// size bytes if size is not -1, and syncs it. It returns the bytes
// written.
func (s *Store) fill(ctx context.Context, f *os.File, d v1.Hash, size int64, r io.Reader) (int64, error) {
	tw, err := s.newTempWriter(f, d, size)
	if err != nil {
		return 0, err
	}
	src := ctxio.Reader(ctx, r)
	if size >= 0 {
		// One byte past the size shows the stream is too long.
		src = io.LimitReader(src, size+1)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := tw.Write(buf[:n]); werr != nil {
				return tw.close(werr)
			}
		}
		if err == io.EOF {
			return tw.close(nil)
		}
		if err != nil {
			return tw.close(err)
		}
	}
}

// commit renames a complete temp file into blobs/ under the shared GC lock,
// so a collector in another process never removes a blob between our
// decision to keep it and its arrival; with syncRename, it syncs the
// directory so the rename survives a crash. The rename moves the temp
// file's reservation to the committed bytes of the usage record, in the
// record's critical section.
func (s *Store) commit(ctx context.Context, f *os.File, tmp, final string, syncRename bool, reserved, n int64) error {
	l, err := s.lockGCShared(ctx)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if err := s.leaseOf(ctx).name(filepath.Base(final)); err != nil {
		return err
	}
	// The mtime is the LRU clock; stamp it from the store's clock.
	touchFile(f, s.opts.now())
	err = s.usage.update(ctx, func(r *usageRecord) (bool, error) {
		var replaced int64 // a copy another process committed meanwhile
		if info, err := os.Lstat(final); err == nil && info.Mode().IsRegular() {
			replaced = info.Size()
		}
		// The rename replaces whatever is at final, a link too, never its target.
		if err := os.Rename(tmp, final); err != nil {
			return false, noSpace(err) // a full directory block fails the rename with ENOSPC
		}
		r.reserved = max(r.reserved-reserved, 0)
		r.committed = max(r.committed+n-replaced, 0)
		return true, nil
	})
	if _, serr := os.Lstat(tmp); err != nil && serr == nil {
		return err // not renamed
	} // else renamed: a failure to write the record is corrected by the next recount
	if !syncRename {
		return nil
	}
	return noSpace(syncDir(s.blobDir))
}

// keepStored reports whether d is already stored with the given size, and
// if so marks it used. The shared GC lock keeps a collector in another
// process from removing it between the check and the touch.
func (s *Store) keepStored(ctx context.Context, d v1.Hash, size int64) (bool, error) {
	p := s.blobPath(d)
	if _, err := os.Lstat(p); err != nil {
		return false, nil
	}
	l, err := s.lockGCShared(ctx)
	if err != nil {
		return false, fmt.Errorf("localfs: put %s: %w", d, err)
	}
	defer l.Unlock()
	if err := s.leaseOf(ctx).name(d.Hex); err != nil {
		return false, fmt.Errorf("localfs: put %s: %w", d, err)
	}
	info, err := lstatRegular(p)
	if errors.Is(err, errNotRegular) {
		s.stats.Corruptions.Add(1) // not stored: the commit's rename replaces it
		return false, nil
	}
	if err != nil || (size >= 0 && info.Size() != size) {
		return false, nil
	}
	s.touchStored(d, p, info.ModTime())
	return true, nil
}

// touch records a use of a blob in its mtime, the durable LRU clock that
// every process sharing the directory sees. It is skipped when the last
// touch is recent, to keep hits cheap. A link put at path since it was
// checked is touched itself, not its target.
func (s *Store) touch(path string, last time.Time) {
	if now, due := s.touchDue(last); due {
		touchPath(path, now) // best effort: a deleted blob needs no touch
	}
}

// touchOpen is touch for a blob open as f.
func (s *Store) touchOpen(f *os.File, last time.Time) {
	if now, due := s.touchDue(last); due {
		touchFile(f, now)
	}
}

func (s *Store) touchDue(last time.Time) (time.Time, bool) {
	now := s.opts.now()
	return now, now.Sub(last) >= s.opts.touchInterval || last.After(now)
}
