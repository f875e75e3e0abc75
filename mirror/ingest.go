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

	"github.com/buildcache/buildcache/cache"
)

// ErrClosed is what a request for a blob not yet stored gets once the
// mirror is closed.
var ErrClosed = errors.New("mirror: closed")

// errNoClients ends a download of unknown size that every client left.
var errNoClients = errors.New("mirror: every client of the download left before its size was known")

// An ingest is one download of a blob not yet stored, shared by every
// client asking for it meanwhile. registry.Resolver.StreamBlob writes the
// upstream's bytes to the store's own ingestion of the blob (a
// cache.Ingester: localfs, a tier over it), which hashes them and, once
// they are all there and verified, commits that very file as the stored
// blob; each client reads the file at its own pace, waiting for more
// when it has caught up. So a cold blob is written once, in the store,
// under its budget. A store that cannot ingest gets the bytes through its
// Put while they are copied to a temp file in WithTempDir for the
// clients. The writer never waits for a client: a slow one costs disk,
// not the others' speed or the store's write. A response's last byte is
// sent only once the whole blob is verified and stored.
//
// The download runs on a context of its own under the mirror's: once its
// size is known (a manifest served under the name listed the blob, or the
// upstream's answer states it) a client leaving does not stop it for the
// others, and one nobody waits for any more still finishes and stores the
// blob (the next pull wants it), bounded by that size. Until the size is
// known, the last client leaving cancels it. Close abandons them all.
type ingest struct {
	d      v1.Hash
	key    string
	cancel context.CancelCauseFunc // the download's context

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a field below changes
	started bool          // the upstream answered with the size: src is set
	size    int64
	src     io.ReaderAt  // the bytes so far
	w       io.Writer    // where they are written (src's file)
	release func() error // frees src (aborting an ingestion not committed)
	written int64        // bytes in src
	done    bool         // StreamBlob returned
	err     error        // what it returned
	readers int          // requests holding the ingest
}

// joinIngest returns the ingest of d from repo, of size bytes if known
// (else -1), starting it if none is in flight. The caller must leave it.
func (m *Mirror) joinIngest(repo string, d v1.Hash, size int64) (*ingest, error) {
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
	ctx, cancel := context.WithCancelCause(m.ctx)
	in := &ingest{d: d, key: key, cancel: cancel, changed: make(chan struct{}), readers: 1}
	m.ingests[key] = in
	m.running.Add(1)
	go m.download(ctx, in, repo, size)
	return in, nil
}

// download runs the ingest's download, once a fetch slot is free.
func (m *Mirror) download(ctx context.Context, in *ingest, repo string, size int64) {
	defer m.running.Done()
	defer in.cancel(nil)
	err := m.fetches.acquire(ctx)
	if err == nil {
		err = m.up.StreamBlob(ctx, repo, in.d, size, func(size int64) (io.Writer, error) {
			return m.startIngest(ctx, in, size)
		})
		m.fetches.release()
	}
	if err != nil && ctx.Err() != nil {
		err = context.Cause(ctx) // ErrClosed, errNoClients: say why it stopped
	}
	if errors.Is(err, cache.ErrDigestMismatch) {
		m.stats.digestMismatches.Add(1)
	}
	m.ingestMu.Lock()
	if m.ingests[in.key] == in {
		delete(m.ingests, in.key) // later requests find the blob stored, or start anew
	}
	m.ingestMu.Unlock()
	in.finish(err)
}

// startIngest is StreamBlob's sink: once the blob's size is known, it
// opens where its bytes go.
func (m *Mirror) startIngest(ctx context.Context, in *ingest, size int64) (io.Writer, error) {
	if ing, ok := cache.As[cache.Ingester](m.store); ok {
		x, err := ing.Ingest(ctx, in.d, size)
		if err == nil {
			in.start(size, x, x, x.Close)
			return committer{in, x}, nil
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return nil, err
		}
	}
	f, err := os.CreateTemp(m.o.tempDir, "buildcache-mirror-ingest-*")
	if err != nil {
		return nil, fmt.Errorf("mirror: temp file for %s: %w", in.d, err)
	}
	in.start(size, f, f, func() error {
		f.Close()
		return os.Remove(f.Name())
	})
	return in, nil
}

// committer is the writer StreamBlob gets for a store's ingestion: its
// Commit makes StreamBlob write the bytes there alone and commit them.
type committer struct {
	*ingest
	x cache.Ingestion
}

func (c committer) Commit(ctx context.Context) error { return c.x.Commit(ctx) }

func (in *ingest) start(size int64, src io.ReaderAt, w io.Writer, release func() error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.started, in.size, in.src, in.w, in.release = true, size, src, w, release
	in.broadcastLocked()
}

// Write appends the upstream's bytes to where the clients read them.
func (in *ingest) Write(p []byte) (int, error) {
	n, err := in.w.Write(p)
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

// finish records the download's end. A failed one's bytes go at once, so
// that nothing unverified outlives it; readers still holding them see the
// error before they read again.
func (in *ingest) finish(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.done, in.err = true, err
	if err != nil || in.readers == 0 {
		in.releaseLocked()
	}
	in.broadcastLocked()
}

// leave ends a request's hold on in. The last one out after the
// download's end frees its bytes; the last one out before the size is
// known cancels the download, which nothing bounds yet.
func (m *Mirror) leave(in *ingest) {
	m.ingestMu.Lock()
	in.mu.Lock()
	in.readers--
	abandon := in.readers == 0 && !in.started && !in.done
	if abandon && m.ingests[in.key] == in {
		delete(m.ingests, in.key) // a newcomer starts anew
	}
	if in.readers == 0 && in.done {
		in.releaseLocked()
	}
	in.mu.Unlock()
	m.ingestMu.Unlock()
	if abandon {
		in.cancel(errNoClients)
	}
}

func (in *ingest) releaseLocked() {
	if in.release != nil {
		_ = in.release()
		in.release = nil
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
		size, started, done, err, changed := in.size, in.started, in.done, in.err, in.changed
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
// left or stalled, or the bytes could not be read.
func (in *ingest) copyRange(ctx context.Context, w io.Writer, start, n int64) error {
	buf := make([]byte, 32<<10)
	flusher, _ := w.(http.Flusher)
	for pos, end := start, start+n; pos < end; {
		hi, err := in.next(ctx, pos, end)
		if err != nil {
			return err
		}
		for pos < hi {
			k, err := in.src.ReadAt(buf[:min(int64(len(buf)), hi-pos)], pos)
			if k == 0 && err != nil {
				return err // src holds at least hi bytes: io.EOF is an error too
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
