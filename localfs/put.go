package localfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/ctxio"
	"github.com/buildcache/buildcache/internal/verify"
)

// copyBufSize is large enough that syscalls and hashing setup are noise
// next to the bytes moved.
const copyBufSize = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Put implements cache.Putter. The bytes are hashed while they are written
// to a temp file beside the blobs; the file is synced and renamed into
// place only if digest and size match, so a crash, a full disk or a
// cancellation leaves the previous state and no partial blob.
func (s *Store) Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localfs: put %s: %w", d, err)
	}
	if s.opts.maxBytes > 0 && size > s.opts.maxBytes {
		return fmt.Errorf("localfs: put %s: %d bytes exceed the store's budget of %d: %w", d, size, s.opts.maxBytes, cache.ErrNoSpace)
	}
	unlock := s.lockDigest(d.Hex)
	defer unlock()

	p := s.blobPath(d)
	if info, err := os.Stat(p); err == nil && (size < 0 || info.Size() == size) {
		s.touch(p, info.ModTime())
		return nil
	}
	if err := s.ensureSpace(ctx, max(size, 0)); err != nil {
		return fmt.Errorf("localfs: put %s: %w", d, err)
	}
	n, err := s.write(ctx, d, size, r)
	if err != nil {
		if !errors.Is(err, cache.ErrDigestMismatch) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			s.stats.Errors.Add(1)
		}
		return fmt.Errorf("localfs: put %s: %w", d, err)
	}
	s.used.Add(n)
	s.stats.BytesIn.Add(uint64(n))
	return nil
}

// write streams r into a locked temp file and renames it into place.
func (s *Store) write(ctx context.Context, d v1.Hash, size int64, r io.Reader) (int64, error) {
	f, err := os.CreateTemp(s.tmpDir, d.Hex[:16]+"-*"+tmpSuffix)
	if err != nil {
		return 0, noSpace(err)
	}
	tmp := f.Name()
	committed := false
	defer func() {
		if !committed {
			os.Remove(tmp) // before Close, so no sweep sees it unlocked
			f.Close()
		}
	}()
	if err := lockExclusive(f); err != nil {
		return 0, fmt.Errorf("locking temp file: %w", err)
	}
	vr := verify.NewReader(ctxio.Reader(ctx, r), d, size, cache.ErrDigestMismatch)
	bp := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(struct{ io.Writer }{f}, vr, *bp)
	copyBufs.Put(bp)
	if err != nil {
		return 0, noSpace(err)
	}
	if !vr.Verified() {
		return 0, fmt.Errorf("stream ended unverified: %w", cache.ErrDigestMismatch)
	}
	if err := f.Sync(); err != nil {
		return 0, noSpace(err)
	}
	if err := s.commit(ctx, tmp, s.blobPath(d)); err != nil {
		return 0, err
	}
	committed = true
	f.Close()
	return vr.N(), nil
}

// commit renames a complete temp file into blobs/ under the shared GC lock,
// so a collector in another process never removes a blob between our
// decision to keep it and its arrival.
func (s *Store) commit(ctx context.Context, tmp, final string) error {
	l, err := lockFile(ctx, s.gcLock, false)
	if err != nil {
		return err
	}
	defer l.Unlock()
	// The mtime is the LRU clock; stamp it from the store's clock.
	now := s.opts.now()
	_ = os.Chtimes(tmp, now, now)
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(s.blobDir)
}

// touch records a use of a blob in its mtime, the durable LRU clock that
// every process sharing the directory sees. It is skipped when the last
// touch is recent, to keep hits cheap.
func (s *Store) touch(path string, last time.Time) {
	now := s.opts.now()
	if now.Sub(last) < s.opts.touchInterval && !last.After(now) {
		return
	}
	_ = os.Chtimes(path, now, now) // best effort: a deleted blob needs no touch
}

// ensureSpace makes room for need bytes, evicting if the budget or the
// free-space floor demands it, or fails with ErrNoSpace.
func (s *Store) ensureSpace(ctx context.Context, need int64) error {
	if s.opts.maxBytes > 0 && s.used.Load()+need > s.opts.maxBytes {
		if _, err := s.evict(ctx, need, 0); err != nil {
			return err
		}
	}
	free, err := freeBytes(s.root)
	if err != nil {
		return err
	}
	if short := need + s.opts.minFreeBytes - free; short > 0 {
		if _, err := s.evict(ctx, need, short); err != nil {
			return err
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
