package localfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
)

// Get implements cache.Getter. The returned stream is verified as it is
// read; on a mismatch the read fails with ErrCorrupt and the blob is
// removed, so the next Get is a clean miss instead of the same bad bytes.
// A stream read to its verified end records the file as verified, for
// OpenFile's sends.
func (s *Store) Get(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	o, err := s.openBlob(ctx, "get", d)
	if err != nil {
		return nil, err
	}
	s.watches.release(o.w) // a reader hashes all it reads: it needs no generation
	return &blobReader{s: s, d: d, f: o.f, id: o.id, v: verify.NewReader(o.f, d, o.size, cache.ErrCorrupt)}, nil
}

// blobReader serves one blob, verifying it, and removes it if it is bad.
type blobReader struct {
	s  *Store
	d  v1.Hash
	f  *os.File
	id fileID // the file's identity when opened
	v  *verify.Reader

	recorded bool
}

func (r *blobReader) Read(p []byte) (int, error) {
	n, err := r.v.Read(p)
	r.s.stats.BytesOut.Add(uint64(n))
	if err == io.EOF && !r.recorded {
		r.recorded = true
		r.verified()
	} else if err != nil {
		err = r.fail(err)
	}
	return n, err
}

// verified records the file as verified if it is still as it was opened,
// so that what was hashed is what the file holds.
func (r *blobReader) verified() {
	if cur, err := fileIDOf(r.f); err == nil && cur == r.id {
		r.s.verified.put(r.d.Hex, cur, r.s.opts.now(), r.s.opts.verifiedEntries)
	}
}

// WriteTo copies with a large buffer: io.Copy would otherwise use the
// destination's ReadFrom, and io.Discard's reads 8 KiB at a time.
func (r *blobReader) WriteTo(w io.Writer) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	// Hide both sides' WriteTo/ReadFrom so the copy uses our buffer.
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, *bp)
}

func (r *blobReader) Close() error { return r.f.Close() }

// fail handles a read error: a mismatch removes the entry.
func (r *blobReader) fail(err error) error {
	if !errors.Is(err, cache.ErrCorrupt) {
		return fmt.Errorf("localfs: reading %s: %w", r.d, err)
	}
	r.s.stats.Corruptions.Add(1)
	r.s.removeIfSame(r.d, r.f)
	return fmt.Errorf("localfs: %w (entry removed)", err)
}

// removeIfSame removes the blob file if it is still the file f was opened
// from: another process may already have replaced it with a good copy.
func (s *Store) removeIfSame(d v1.Hash, f *os.File) {
	unlock := s.lockDigest(d.Hex)
	defer unlock()
	l, err := s.lockGCShared(context.Background())
	if err != nil {
		return
	}
	defer l.Unlock()
	s.verified.drop(d.Hex)
	p := s.blobPath(d)
	opened, err1 := f.Stat()
	current, err2 := os.Lstat(p)
	if err1 == nil && err2 == nil && os.SameFile(opened, current) {
		if os.Remove(p) == nil {
			s.usage.add(context.Background(), -current.Size())
		}
	}
}
