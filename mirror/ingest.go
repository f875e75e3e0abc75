package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrClosed is what a request for a blob not yet stored gets once the
// mirror is closed.
var ErrClosed = errors.New("mirror: closed")

// An ingest is one download of a blob not yet stored, shared by every
// client asking for it meanwhile. registry.Resolver.StreamBlob writes the
// upstream's bytes, as the store's Put reads and hashes them, to a temp
// file; each client reads that file at its own pace, waiting for more
// when it has caught up. The writer never waits for a client: a slow one
// costs disk, not the others' speed or the store's write. A response's
// last byte is sent only once the whole blob is verified and stored.
//
// The download runs on the mirror's context, not a client's: a client
// leaving does not stop it for the others, and one nobody waits for any
// more still finishes and stores the blob (the next pull wants it), within
// the resolver's transport timeouts; Close abandons them all.
type ingest struct {
	d v1.Hash

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a field below changes
	size    int64         // set with file when the upstream answered
	file    *os.File      // the bytes so far; nil until then
	written int64         // bytes in file
	done    bool          // StreamBlob returned
	err     error         // what it returned
	readers int           // requests holding the ingest
}

// joinIngest returns the ingest of d from repo, starting it if none is in
// flight. The caller must release it.
func (m *Mirror) joinIngest(repo string, d v1.Hash) (*ingest, error) {
	key := repo + "@" + d.String()
	m.ingestMu.Lock()
	defer m.ingestMu.Unlock()
	if in := m.ingests[key]; in != nil {
		in.mu.Lock()
		in.readers++
		in.mu.Unlock()
		return in, nil
	}
	if m.ctx.Err() != nil {
		return nil, ErrClosed
	}
	in := &ingest{d: d, changed: make(chan struct{}), readers: 1}
	m.ingests[key] = in
	m.running.Add(1)
	go func() {
		defer m.running.Done()
		err := m.up.StreamBlob(m.ctx, repo, d, func(size int64) (io.Writer, error) {
			return in.start(m.o.tempDir, size)
		})
		m.ingestMu.Lock()
		delete(m.ingests, key) // later requests find the blob stored, or start anew
		m.ingestMu.Unlock()
		in.finish(err)
	}()
	return in, nil
}

// start creates the temp file once the blob's size is known.
func (in *ingest) start(dir string, size int64) (io.Writer, error) {
	f, err := os.CreateTemp(dir, "buildcache-mirror-ingest-*")
	if err != nil {
		return nil, fmt.Errorf("mirror: temp file for %s: %w", in.d, err)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.file, in.size = f, size
	in.broadcastLocked()
	return in, nil
}

// Write appends the upstream's bytes to the temp file.
func (in *ingest) Write(p []byte) (int, error) {
	n, err := in.file.Write(p)
	in.mu.Lock()
	in.written += int64(n)
	in.broadcastLocked()
	in.mu.Unlock()
	return n, err
}

func (in *ingest) broadcastLocked() {
	close(in.changed)
	in.changed = make(chan struct{})
}

// finish records the download's end. A failed one's temp file goes at
// once, so that nothing unverified outlives it; readers still holding the
// file see the error before they read again.
func (in *ingest) finish(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.done, in.err = true, err
	if in.file != nil && err != nil {
		_ = os.Remove(in.file.Name())
	}
	if in.readers == 0 {
		in.closeLocked()
	}
	in.broadcastLocked()
}

// release ends a request's hold; the last one out after the download's end
// closes and removes the temp file.
func (in *ingest) release() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.readers--
	if in.readers == 0 && in.done {
		in.closeLocked()
	}
}

func (in *ingest) closeLocked() {
	if in.file != nil {
		_ = in.file.Close()
		_ = os.Remove(in.file.Name())
		in.file = nil
	}
}

// waitSize waits until the upstream has answered. streamed false with a
// nil error means the blob is in the store and is served from there: it
// was stored already, another download of it was in flight, its size was
// unknown and it was stored whole first, or it is empty (an empty
// response would be complete before it is verified).
func (in *ingest) waitSize(ctx context.Context) (size int64, streamed bool, err error) {
	for {
		in.mu.Lock()
		size, started, done, err, changed := in.size, in.file != nil, in.done, in.err, in.changed
		in.mu.Unlock()
		switch {
		case done && err != nil:
			return 0, false, err
		case started && size > 0:
			return size, true, nil
		case done:
			return 0, false, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, false, context.Cause(ctx)
		}
	}
}

// next waits for bytes past pos of a response ending at end and returns
// how far the response may now go: up to what is written, but its last
// byte only once the blob is verified and stored.
func (in *ingest) next(ctx context.Context, pos, end int64) (int64, error) {
	for {
		in.mu.Lock()
		done, err, changed := in.done, in.err, in.changed
		hi := min(in.written, end-1)
		in.mu.Unlock()
		switch {
		case done && err != nil:
			return 0, err
		case done:
			return end, nil // StreamBlob checked that all size bytes were written
		case hi > pos:
			return hi, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// copyRange writes bytes [start, start+n) of the blob to w as they arrive.
// An error means the response must be cut: the blob failed, the client
// left, or the temp file could not be read.
func (in *ingest) copyRange(ctx context.Context, w io.Writer, start, n int64) error {
	buf := make([]byte, 32<<10)
	flusher, _ := w.(http.Flusher)
	for pos, end := start, start+n; pos < end; {
		hi, err := in.next(ctx, pos, end)
		if err != nil {
			return err
		}
		for pos < hi {
			k, err := in.file.ReadAt(buf[:min(int64(len(buf)), hi-pos)], pos)
			if k == 0 && err != nil {
				return err // the file holds at least hi bytes: io.EOF is an error too
			}
			if _, err := w.Write(buf[:k]); err != nil {
				return err
			}
			pos += int64(k)
		}
		if flusher != nil {
			flusher.Flush() // a client waiting for the rest gets what is here
		}
	}
	return nil
}
