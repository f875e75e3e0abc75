package localfs

import (
	"context"
	"fmt"
	"os"
	"sync"
)

// ErrClosed is the error of a Put or PutDeferred that Close abandoned or
// that was called after Close. It wraps context.Canceled: the write was
// cancelled, and nothing was stored.
var ErrClosed = fmt.Errorf("localfs: store closed: %w", context.Canceled)

// A Put streams into its temp file for as long as its source takes, and
// a source may block for long, out of reach of any context (a silent
// upstream). So the temp file of a Put whose context is done, or that
// Close abandons, is removed at once by whoever cancels, not by the Put
// when its source returns: a process that exits right after Close, or
// after giving up on a download, leaves no temp file behind. The Put
// then fails when it next writes (its file is closed) or as soon as its
// source returns.
//
// Each Put has a writeSlot for its temp file. Its mutex is held by the
// Put while it creates the file and while it commits or drops it, short
// steps that end early once the context is done, and by whoever abandons
// it; the streaming in between holds nothing.

// writeSet is the Puts in progress, for Close.
type writeSet struct {
	mu     sync.Mutex
	closed bool
	live   map[*writeSlot]struct{}
}

// writeSlot is one Put's temp file.
type writeSlot struct {
	cancel context.CancelCauseFunc // the Put's context

	mu       sync.Mutex
	done     bool     // abandoned or finished: no temp file may be made
	f        *os.File // the temp file, locked, until committed or removed
	tmp      string   // its name (a reservation that grows renames it)
	reserved int64    // the bytes its name reserves in the usage record
}

// beginWrite registers a Put. Its context is ctx, cancelled with
// ErrClosed by Close; when it is done, the temp file is abandoned. end
// must be called when the Put returns.
func (s *Store) beginWrite(ctx context.Context) (_ context.Context, slot *writeSlot, end func(), err error) {
	ws := &s.writes
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.closed {
		return nil, nil, nil, ErrClosed
	}
	ctx, cancel := context.WithCancelCause(ctx)
	slot = &writeSlot{cancel: cancel}
	if ws.live == nil {
		ws.live = map[*writeSlot]struct{}{}
	}
	ws.live[slot] = struct{}{}
	stop := context.AfterFunc(ctx, func() { s.abandon(slot) })
	return ctx, slot, func() {
		stop()
		cancel(nil)
		ws.mu.Lock()
		delete(ws.live, slot)
		ws.mu.Unlock()
	}, nil
}

// create makes the slot's temp file with mk, unless the Put was
// abandoned already.
func (slot *writeSlot) create(ctx context.Context, reserved int64, mk func() (*os.File, error)) (*os.File, error) {
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if slot.done {
		return nil, abandonedErr(ctx)
	}
	f, err := mk()
	if err != nil {
		return nil, err
	}
	slot.f, slot.tmp, slot.reserved = f, f.Name(), reserved
	return f, nil
}

// finish commits or drops the slot's temp file, holding the slot: commit
// gets the temp file's name and reservation and returns them, changed
// if it renamed the file. It fails if the temp file was abandoned.
func (s *Store) finish(ctx context.Context, slot *writeSlot, commit func(tmp string, reserved int64) (string, int64, error)) error {
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if slot.f == nil {
		return abandonedErr(ctx)
	}
	tmp, reserved, err := commit(slot.tmp, slot.reserved)
	if err != nil {
		s.dropTemp(ctx, slot.f, tmp, reserved)
	} else {
		slot.f.Close()
	}
	slot.f, slot.done = nil, true
	return err
}

// abandon removes the slot's temp file, if it has one, and keeps it from
// making one. It waits for a Put creating or finishing its file.
func (s *Store) abandon(slot *writeSlot) {
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if slot.f != nil {
		s.dropTemp(context.Background(), slot.f, slot.tmp, slot.reserved) // its Close makes the Put's next write fail
		slot.f = nil
	}
	slot.done = true
}

// abandonedErr is why a Put's temp file was abandoned: its context's
// cause, or Close.
func abandonedErr(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return ErrClosed
}

// closeWrites abandons every Put in progress and refuses new ones. When
// it returns, no temp file of a Put is left, nor will one be made.
func (s *Store) closeWrites() {
	ws := &s.writes
	ws.mu.Lock()
	ws.closed = true
	slots := make([]*writeSlot, 0, len(ws.live))
	for slot := range ws.live {
		slots = append(slots, slot)
	}
	ws.mu.Unlock()
	for _, slot := range slots {
		slot.cancel(ErrClosed) // steps in progress end early
	}
	for _, slot := range slots {
		s.abandon(slot)
	}
}
