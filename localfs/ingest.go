package localfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

var _ cache.Ingester = (*Store)(nil)

// Ingest implements cache.Ingester: the blob is written as a Put writes
// it, to a locked temp file in the store's temp directory that reserves
// its bytes in the byte budget (when size is known; one of unknown size
// is held to the budget and the free-space floor while it is written, and
// reserves its bytes at Commit), hashed while it is written, and renamed
// into blobs/ by Commit. ReadAt reads that file through a descriptor of
// its own, so after Commit it reads the committed blob. A process killed
// meanwhile leaves the temp file unlocked, for Open and GC to sweep; Close
// of the store aborts the ingestions in progress.
//
// Commit syncs the blob and its name, as Put does. Concurrent Puts and
// Ingests of the same digest in this process wait for the ingestion to
// end.
func (s *Store) Ingest(ctx context.Context, d v1.Hash, size int64) (cache.Ingestion, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("localfs: ingest %s: %w", d, err)
	}
	if s.opts.maxBytes > 0 && size > s.opts.maxBytes {
		return nil, fmt.Errorf("localfs: ingest %s: %d bytes exceed the store's budget of %d: %w", d, size, s.opts.maxBytes, cache.ErrNoSpace)
	}
	ctx, slot, end, err := s.beginWrite(ctx)
	if err != nil {
		return nil, fmt.Errorf("localfs: ingest %s: %w", d, err)
	}
	in := &ingestion{s: s, d: d, ctx: ctx, slot: slot, end: end, unlock: s.lockDigest(d.Hex)}
	if err := in.start(ctx, size); err != nil {
		in.Close()
		if !errors.Is(err, cache.ErrNoSpace) && ctx.Err() == nil {
			s.stats.Errors.Add(1)
		}
		return nil, fmt.Errorf("localfs: ingest %s: %w", d, err)
	}
	// An ingestion whose context ends is aborted at once, freeing the
	// digest for another, whether or not its owner closes it yet.
	context.AfterFunc(ctx, in.abort)
	return in, nil
}

// ingestion is a localfs cache.Ingestion.
type ingestion struct {
	s      *Store
	d      v1.Hash
	ctx    context.Context // the slot's: ends when Ingest's does, or at Close of the store
	slot   *writeSlot
	f      *os.File // the slot's temp file, written
	rf     *os.File // the same file, read by ReadAt
	tw     *tempWriter
	end    func() // ends the slot
	unlock func() // of the digest

	mu     sync.Mutex
	state  ingestState
	closed bool // Close was called: rf is closed
}

// ingestState says who ends an ingestion's hold on the store: Commit or
// abort, whichever comes first, once.
type ingestState int

const (
	ingestOpen       ingestState = iota // being written
	ingestCommitting                    // Commit took it
	ingestAborted
)

func (in *ingestion) start(ctx context.Context, size int64) error {
	if err := in.s.ensureFree(ctx, max(size, 0)); err != nil {
		return err
	}
	f, err := in.slot.create(ctx, max(size, 0), func() (*os.File, error) {
		return in.s.createTemp(ctx, in.d.Hex[:16], max(size, 0))
	})
	if err != nil {
		return err
	}
	in.f = f
	if in.rf, err = reopen(f); err != nil {
		return err
	}
	in.tw, err = in.s.newTempWriter(f, in.d, size)
	return err
}

// reopen opens f again for reading, with a descriptor of its own that
// outlives f's (closed when the blob is committed), and makes sure it is
// the same file, not whatever took its name meanwhile.
func reopen(f *os.File) (*os.File, error) {
	rf, err := os.OpenFile(f.Name(), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	a, errA := f.Stat()
	b, errB := rf.Stat()
	if err := errors.Join(errA, errB); err != nil || !os.SameFile(a, b) {
		rf.Close()
		return nil, fmt.Errorf("temp file %s was replaced: %w", f.Name(), errors.Join(err, errNotRegular))
	}
	return rf, nil
}

func (in *ingestion) Write(p []byte) (int, error) {
	return in.tw.Write(p)
}

func (in *ingestion) ReadAt(p []byte, off int64) (int, error) {
	return in.rf.ReadAt(p, off)
}

// Commit implements cache.Ingestion. The lease of ctx, if any, names the
// blob, as a Put's does.
func (in *ingestion) Commit(ctx context.Context) error {
	in.mu.Lock()
	state := in.state
	if state == ingestOpen {
		in.state = ingestCommitting
	}
	in.mu.Unlock()
	if state != ingestOpen {
		return fmt.Errorf("localfs: commit %s: the ingestion was committed or aborted", in.d)
	}
	defer in.release()
	stop := context.AfterFunc(ctx, func() { in.slot.cancel(context.Cause(ctx)) })
	defer stop()
	n, err := in.tw.close(nil)
	if err == nil {
		err = errors.Join(context.Cause(in.ctx), ctx.Err())
	}
	if err = in.s.place(ctx, in.slot, in.f, in.d, n, err, true); err != nil {
		if !errors.Is(err, cache.ErrDigestMismatch) && !errors.Is(err, cache.ErrNoSpace) &&
			!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			in.s.stats.Errors.Add(1)
		}
		return fmt.Errorf("localfs: commit %s: %w", in.d, err)
	}
	in.s.stats.BytesIn.Add(uint64(n))
	return nil
}

// Close implements cache.Ingestion.
func (in *ingestion) Close() error {
	in.mu.Lock()
	closed := in.closed
	in.closed = true
	in.mu.Unlock()
	if closed {
		return nil
	}
	in.abort()
	if in.rf != nil {
		return in.rf.Close()
	}
	return nil
}

// abort removes the temp file and ends the ingestion's hold on the store,
// unless Commit has taken it. It runs when the ingestion's context ends,
// and at Close.
func (in *ingestion) abort() {
	in.mu.Lock()
	state := in.state
	if state == ingestOpen {
		in.state = ingestAborted
	}
	in.mu.Unlock()
	if state != ingestOpen {
		return
	}
	in.s.abandon(in.slot) // removes the temp file: the writer's next Write fails
	if in.tw != nil {
		_, _ = in.tw.close(errAborted)
	}
	in.release()
}

// errAborted is why an ingestion closed before its Commit stored nothing.
var errAborted = errors.New("localfs: ingestion closed before it was committed")

// release ends the ingestion's hold on the store: its write slot and the
// digest's lock. It runs once, at Commit or at Close.
func (in *ingestion) release() {
	in.end()
	in.unlock()
}
