package localfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
)

var _ cache.FileOpener = (*Store)(nil)

// errChanged fails a send whose file changed, by a hand other than the
// store's touch, after the send began: what was sent may not be what was
// verified. The entry is not removed (the change may be another
// process's touch); the next request verifies the file anew.
var errChanged = errors.New("the blob's file changed while it was sent")

// OpenFile implements cache.FileOpener: blob d's file, which SendRange
// sends (with sendfile to a connection), verified by the store's record of a recent hash of
// the same file or by a hash alongside the send. Like Get, it counts a
// hit or a miss and touches the blob.
func (s *Store) OpenFile(ctx context.Context, d v1.Hash) (cache.BlobFile, error) {
	o, err := s.openBlob(ctx, "open", d)
	if err != nil {
		return nil, err
	}
	return &blobFile{s: s, d: d, f: o.f, size: o.size, w: o.w, gen: o.gen}, nil
}

// openedBlob is a blob file just opened, watched (verified.go).
type openedBlob struct {
	f    *os.File
	size int64
	w    *fileWatch // held: the caller releases it
	gen  uint64     // the file's generation
	id   fileID     // and its identity
}

// openBlob opens blob d's file, under ctx's lease, for Get and OpenFile:
// it counts the hit or the miss, removes an entry that is not a regular
// file, and watches the file, touching it if due (watchOpened).
func (s *Store) openBlob(ctx context.Context, op string, d v1.Hash) (*openedBlob, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("localfs: %s %s: %w", op, d, err)
	}
	var f *os.File
	var info os.FileInfo
	err := s.underLease(ctx, d, func() (err error) {
		f, info, err = openRegular(s.blobPath(d))
		return err
	})
	if errors.Is(err, errNotRegular) {
		s.stats.Misses.Add(1)
		_, err = s.dropIrregular(op, d, err)
		return nil, err
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			s.stats.Misses.Add(1)
		}
		return nil, s.pathErr(op, d, err)
	}
	s.stats.Hits.Add(1)
	w, gen, id, err := s.watchOpened(d, f)
	if err != nil {
		f.Close()
		return nil, s.pathErr(op, d, err)
	}
	return &openedBlob{f: f, size: info.Size(), w: w, gen: gen, id: id}, nil
}

// blobFile is a cache.BlobFile of the store.
type blobFile struct {
	s    *Store
	d    v1.Hash
	f    *os.File
	size int64
	w    *fileWatch // held until Close
	gen  uint64     // the file's generation when opened
}

func (b *blobFile) Size() int64 { return b.size }

func (b *blobFile) Close() error {
	b.s.watches.release(b.w)
	return b.f.Close()
}

// SendRange implements cache.BlobFile. All but the last byte go out
// from the file (copyTo) while the file is verified: by the record, or by a hash of the whole file on
// another goroutine, shared with every send of the same file meanwhile.
// The last byte goes once the hash matched and the file's identity shows
// no change since it was opened.
func (b *blobFile) SendRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	if off < 0 || n < 0 || off+n > b.size {
		return 0, fmt.Errorf("localfs: send %s: range [%d, %d) of %d bytes", b.d, off, off+n, b.size)
	}
	wait := b.verify(ctx)
	var sent int64
	if n > 1 {
		var err error
		sent, err = b.copyTo(w, off, n-1)
		b.s.stats.BytesOut.Add(uint64(sent))
		if err == nil && sent < n-1 {
			err = io.ErrUnexpectedEOF // truncated under us: the check below would fail too
		}
		if err != nil {
			return sent, fmt.Errorf("localfs: send %s: %w", b.d, err)
		}
	}
	if err := wait(); err != nil {
		return sent, err
	}
	if n == 0 {
		return 0, nil
	}
	last := []byte{0}
	if _, err := b.f.ReadAt(last, off+n-1); err != nil {
		return sent, fmt.Errorf("localfs: send %s: %w", b.d, err)
	}
	if err := b.unchanged(); err != nil {
		return sent, err
	}
	k, err := w.Write(last)
	b.s.stats.BytesOut.Add(uint64(k))
	return sent + int64(k), err
}

// copyTo writes n bytes of the file from off to w: through w's ReadFrom
// given the file itself, which a TCP connection (and an
// http.ResponseWriter over one) sends with sendfile(2), or else through
// a pooled 1 MiB buffer.
func (b *blobFile) copyTo(w io.Writer, off, n int64) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		if _, err := b.f.Seek(off, io.SeekStart); err != nil {
			return 0, err
		}
		return rf.ReadFrom(&io.LimitedReader{R: b.f, N: n})
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(w, io.NewSectionReader(b.f, off, n), *bp)
}

// unchanged checks that the file's identity shows no change since it was
// opened but the store's own touches.
func (b *blobFile) unchanged() error {
	b.w.mu.Lock() // before the fstat: a touch in between would look foreign
	defer b.w.mu.Unlock()
	cur, err := fileIDOf(b.f)
	if err != nil {
		return b.s.pathErr("send", b.d, err)
	}
	b.w.observeLocked(cur)
	if b.w.gen != b.gen {
		return fmt.Errorf("localfs: send %s: %w", b.d, errChanged)
	}
	return nil
}

// hashRun is one hash of a watched file, which every send of that file
// in that generation waits for.
type hashRun struct {
	gen  uint64
	done chan struct{}
	err  error // set before done is closed
}

// verify starts the verification of the file and returns what waits for
// it: at once when the record has it, else a hash of the file, started
// or joined. The hash runs to its end even if its senders leave, so that
// the next one finds it recorded.
func (b *blobFile) verify(ctx context.Context) (wait func() error) {
	s, w := b.s, b.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != b.gen {
		return func() error { return fmt.Errorf("localfs: send %s: %w", b.d, errChanged) }
	}
	if s.verified.valid(b.d.Hex, w.last, s.opts.now(), s.opts.verifiedTTL) {
		s.verifiedHits.Add(1)
		return func() error { return nil }
	}
	run := w.hashing
	if run == nil || run.gen != b.gen {
		dup, err := dupFile(b.f)
		if err != nil {
			return func() error { return b.s.pathErr("send", b.d, err) }
		}
		run = &hashRun{gen: b.gen, done: make(chan struct{})}
		w.hashing = run
		s.watches.hold(w)
		go s.hashFile(b.d, dup, b.size, w, run)
	}
	return func() error {
		select {
		case <-run.done:
			return run.err
		case <-ctx.Done():
			return fmt.Errorf("localfs: send %s: %w", b.d, context.Cause(ctx))
		}
	}
}

// hashFile hashes size bytes of f, blob d's file, for run: a match is
// recorded if the file is unchanged (but for the store's touches) from
// the start of the run to its end; a mismatch removes the entry.
func (s *Store) hashFile(d v1.Hash, f *os.File, size int64, w *fileWatch, run *hashRun) {
	defer s.watches.release(w)
	defer f.Close()
	bp := copyBufs.Get().(*[]byte)
	v := verify.NewReader(io.NewSectionReader(f, 0, size), d, size, cache.ErrCorrupt)
	_, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, v, *bp)
	copyBufs.Put(bp)
	s.verifiedBytes.Add(uint64(v.N()))
	if err == nil && !v.Verified() {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, cache.ErrCorrupt) {
		s.stats.Corruptions.Add(1)
		s.removeIfSame(d, f)
		err = fmt.Errorf("localfs: %w (entry removed)", err)
	} else if err != nil {
		err = fmt.Errorf("localfs: verifying %s: %w", d, err)
	}
	w.mu.Lock()
	cur, serr := fileIDOf(f)
	if serr == nil {
		w.observeLocked(cur)
	}
	switch {
	case err != nil:
	case serr != nil:
		err = s.pathErr("verify", d, serr)
	case w.gen != run.gen:
		err = fmt.Errorf("localfs: verifying %s: %w", d, errChanged)
	default:
		s.verified.put(d.Hex, w.last, s.opts.now(), s.opts.verifiedEntries)
	}
	if w.hashing == run {
		w.hashing = nil
	}
	w.mu.Unlock()
	run.err = err
	close(run.done)
}

// dupFile is a second descriptor of f's open file, which outlives f's
// Close.
func dupFile(f *os.File) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := sc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}
