package localfs

import (
	"fmt"
	"io"
	"math"
	"os"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
)

// tempWriter writes a blob into its temp file, as a Put streams it or an
// ingestion is fed, and verifies it.
//
// The bytes go into the temp file as fast as they come, and a second
// goroutine hashes them back out of it (from the page cache), trailing
// the writes. Hashing then overlaps the writing and, above all, the
// fsync, instead of adding to them: for a large blob, a Put takes about
// as long as writing and syncing the bytes alone. It also verifies the
// bytes that were stored rather than the bytes given.
type tempWriter struct {
	s    *Store
	f    *os.File
	d    v1.Hash
	size int64 // -1: unknown

	written atomic.Int64  // bytes in the file, for the hasher
	more    chan struct{} // a write landed
	wrote   chan struct{} // writing stopped; closed after failed is set
	failed  bool          // writing stopped early; the hasher should quit
	hashed  chan error    // the hasher's verdict
	flushed int64         // bytes already handed to the disk by startWriteback
	checked int64         // bytes written when free space was last checked
	err     error         // the first write error: the writer is dead
}

// newTempWriter makes f, a new temp file, readable as blobs are, and
// starts hashing what will be written to it as blob d of size bytes
// (-1: unknown).
func (s *Store) newTempWriter(f *os.File, d v1.Hash, size int64) (*tempWriter, error) {
	// CreateTemp makes 0600 files; blobs are content, readable by every
	// user and tool sharing the cache (the umask still applies to dirs).
	if err := f.Chmod(0o644); err != nil {
		return nil, err
	}
	tw := &tempWriter{s: s, f: f, d: d, size: size, more: make(chan struct{}, 1), wrote: make(chan struct{}), hashed: make(chan error, 1)}
	go tw.hash(d)
	return tw, nil
}

func (tw *tempWriter) hash(d v1.Hash) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	// Reads stay below what has been written, so the section never hits
	// the end of the file until writing is over.
	vr := verify.NewReader(io.NewSectionReader(tw.f, 0, math.MaxInt64), d, tw.size, cache.ErrDigestMismatch)
	for {
		select {
		case <-tw.more:
			for vr.N() < tw.written.Load() {
				if _, err := vr.Read(buf[:min(int64(len(buf)), tw.written.Load()-vr.N())]); err != nil {
					tw.hashed <- err
					return
				}
			}
		case <-tw.wrote:
			if tw.failed {
				tw.hashed <- nil
				return
			}
			// The file is complete: hash the rest, and let verify check
			// digest and size at its end.
			_, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, vr, buf)
			if err == nil && !vr.Verified() {
				err = fmt.Errorf("stream ended unverified: %w", cache.ErrDigestMismatch)
			}
			tw.hashed <- err
			return
		}
	}
}

// Write appends p to the temp file, checking every spaceCheckInterval
// bytes that the free-space floor and the byte budget still hold, and
// refusing bytes past the blob's size.
func (tw *tempWriter) Write(p []byte) (int, error) {
	if tw.err != nil {
		return 0, tw.err
	}
	w := tw.written.Load()
	if tw.size >= 0 && w+int64(len(p)) > tw.size {
		tw.err = fmt.Errorf("%s: more than the expected %d bytes: %w", tw.d, tw.size, cache.ErrDigestMismatch) // as verify says it
		return 0, tw.err
	}
	if _, err := tw.f.Write(p); err != nil {
		tw.err = noSpace(err)
		return 0, tw.err
	}
	w = tw.written.Add(int64(len(p)))
	if w-tw.flushed >= writebackChunk {
		startWriteback(tw.f, tw.flushed, w-tw.flushed)
		tw.flushed = w
	}
	select {
	case tw.more <- struct{}{}:
	default:
	}
	if w-tw.checked >= spaceCheckInterval {
		tw.checked = w
		if err := tw.s.spaceWhileWriting(w); err != nil {
			tw.err = err
			return len(p), err
		}
	}
	return len(p), nil
}

// close ends the writing, failed by werr if not nil (or by an earlier
// write error), syncs the file if it is complete, and returns the bytes
// written once the hasher has verified them. It must be called once, by
// the writer.
func (tw *tempWriter) close(werr error) (int64, error) {
	if werr == nil {
		werr = tw.err
	}
	tw.failed = werr != nil
	close(tw.wrote)
	var serr error
	if werr == nil {
		serr = tw.f.Sync() // while the hasher catches up
	}
	herr := <-tw.hashed
	switch {
	case werr != nil:
		return 0, werr
	case herr != nil:
		return 0, herr
	case serr != nil:
		return 0, noSpace(serr)
	}
	return tw.written.Load(), nil
}
