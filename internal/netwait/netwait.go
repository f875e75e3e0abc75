// Package netwait bounds the waits of one HTTP exchange (a try) with a
// server that may stop answering: the wait for the answer's status and
// headers, and each wait for the next bytes of a body, in either
// direction. A bound that runs out cancels the try's context, which is
// what makes a transport give up a blocked dial, write or read, whatever
// transport it is; the try's error is then a *TimeoutError, a net.Error
// whose Timeout is true, which internal/netfail counts as unreachable.
//
// Time the caller spends between Reads of a body, or that the source of
// an upload takes to produce bytes, does not count.
package netwait

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// TimeoutError is a bound running out. It is a net.Error whose Timeout is
// true, so netfail counts it as unreachable and retryable.
type TimeoutError struct {
	What string        // "response headers", "bytes of the body"
	D    time.Duration // the bound
}

func (e *TimeoutError) Error() string   { return fmt.Sprintf("no %s within %v", e.What, e.D) }
func (e *TimeoutError) Timeout() bool   { return true }
func (e *TimeoutError) Temporary() bool { return true }

var _ net.Error = (*TimeoutError)(nil)

// Watchdog cancels one try when a bound runs out. Create it with New,
// send the request with Context, call Start when the request is handed
// to the transport and GotAnswer when it returns; wrap the request's
// streamed body with Upload and the answer's with Body, whose Close ends
// the try (Release, when there is no body to return).
type Watchdog struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	header *TimeoutError
	stall  *TimeoutError

	mu       sync.Mutex
	timer    *time.Timer
	why      error // what the timer running out means
	answered bool  // the answer's headers are in: the upload no longer arms it
}

// New returns a Watchdog for one try under ctx: the answer's headers must
// come within header of Start (connecting counts), and every wait for the
// next bytes of a body must end within stall.
func New(ctx context.Context, header, stall time.Duration) *Watchdog {
	w := &Watchdog{
		header: &TimeoutError{"response headers", header},
		stall:  &TimeoutError{"bytes of the body", stall},
	}
	w.ctx, w.cancel = context.WithCancelCause(ctx)
	return w
}

// Context is the try's context: send the request with it.
func (w *Watchdog) Context() context.Context { return w.ctx }

// Start arms the header bound: the request is being handed over.
func (w *Watchdog) Start() { w.arm(w.header, false) }

// arm (re)starts the timer: if it runs out before disarm, the try ends
// with why. An upload's arm and disarm (upload true) do nothing once the
// answer is in: the transport may still be reading the request's body
// while the caller reads the answer's, which has the timer then.
func (w *Watchdog) arm(why *TimeoutError, upload bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if upload && w.answered {
		return
	}
	w.why = why
	if w.timer == nil {
		w.timer = time.AfterFunc(why.D, w.fire)
	} else {
		w.timer.Reset(why.D)
	}
}

func (w *Watchdog) disarm(upload bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if upload && w.answered {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}

func (w *Watchdog) fire() {
	w.mu.Lock()
	why := w.why
	w.mu.Unlock()
	w.cancel(why)
}

// GotAnswer stops the header bound once the transport has returned.
func (w *Watchdog) GotAnswer() {
	w.mu.Lock()
	w.answered = true
	w.mu.Unlock()
	w.disarm(false)
}

// Release ends the try: its context is cancelled, freeing the timer.
func (w *Watchdog) Release() {
	w.disarm(false)
	w.cancel(context.Canceled)
}

// Explain replaces err with the bound that caused it, if one did.
func (w *Watchdog) Explain(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var te *TimeoutError
	if cause := context.Cause(w.ctx); errors.As(cause, &te) {
		return te
	}
	return err
}

// Body wraps an answer's body: every Read must get bytes within the stall
// bound; Close ends the try.
func (w *Watchdog) Body(rc io.ReadCloser) io.ReadCloser { return &watchedBody{rc: rc, w: w} }

// Upload wraps a request's streamed body: while the transport is sending
// it, the server must take each chunk within the stall bound; once it has
// all been read, the header bound starts.
func (w *Watchdog) Upload(r io.Reader) io.Reader { return &watchedUpload{r: r, w: w} }

type watchedBody struct {
	rc io.ReadCloser
	w  *Watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return b.rc.Read(p)
	}
	b.w.arm(b.w.stall, false)
	n, err := b.rc.Read(p)
	b.w.disarm(false)
	return n, b.w.Explain(err)
}

func (b *watchedBody) Close() error {
	err := b.rc.Close()
	b.w.Release()
	return err
}

type watchedUpload struct {
	r io.Reader
	w *Watchdog
}

func (u *watchedUpload) Read(p []byte) (int, error) {
	u.w.disarm(true) // the time our source takes is not the server's
	n, err := u.r.Read(p)
	if err == io.EOF {
		u.w.arm(u.w.header, true)
	} else {
		u.w.arm(u.w.stall, true)
	}
	return n, err
}
