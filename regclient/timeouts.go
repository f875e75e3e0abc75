package regclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Timeouts bound how long a request waits for a registry that has stopped
// answering. A zero field keeps its default.
//
// Connect and TLSHandshake are settings of the default transport; a
// transport given with WithTransport keeps its own. ResponseHeader and
// Stall are enforced by the client itself, through each request's
// context, so they hold with any transport that honours a request's
// context (http.Transport does).
type Timeouts struct {
	// Connect bounds opening the TCP connection (default 30s).
	Connect time.Duration
	// TLSHandshake bounds the TLS handshake (default 10s).
	TLSHandshake time.Duration
	// ResponseHeader bounds the wait for an answer's status and headers,
	// counted from when the request (and its body) has been handed over,
	// so a connection that is slow to open counts too (default 30s).
	ResponseHeader time.Duration
	// Stall bounds one wait for the next bytes of a body that stops
	// moving: a download's Read that gets nothing, or an upload the
	// registry stops taking (default 30s). Time the caller spends between
	// Reads does not count.
	Stall time.Duration
}

// defaultTimeouts are the bounds a Client keeps unless
// WithTimeouts says otherwise: Docker's and go-containerregistry's dial
// and handshake bounds, and as long for an answer or a stalled body.
func defaultTimeouts() Timeouts {
	return Timeouts{
		Connect:        30 * time.Second,
		TLSHandshake:   10 * time.Second,
		ResponseHeader: 30 * time.Second,
		Stall:          30 * time.Second,
	}
}

// WithTimeouts sets the bounds on a registry that stops answering
// (defaults: Connect 30s, TLSHandshake 10s, ResponseHeader 30s, Stall 30s;
// a zero field keeps its default). A request
// that runs into one fails with a *RemoteError whose error is a timeout
// (net.Error), counted as unreachable: it is retried like a broken
// connection, and a cached image is served Stale. A context's deadline
// ends a call whatever these say. Connect and TLSHandshake conflict with
// WithTransport, whose transport has its own.
func WithTimeouts(t Timeouts) Option {
	return func(o *options) error {
		if t.Connect < 0 || t.TLSHandshake < 0 || t.ResponseHeader < 0 || t.Stall < 0 {
			return fmt.Errorf("regclient: WithTimeouts(%+v): negative timeout", t)
		}
		o.timeouts = t.or(o.timeouts)
		o.dialTimeoutsSet = o.dialTimeoutsSet || t.Connect > 0 || t.TLSHandshake > 0
		return nil
	}
}

// or fills t's zero fields from d.
func (t Timeouts) or(d Timeouts) Timeouts {
	pick := func(a, b time.Duration) time.Duration {
		if a > 0 {
			return a
		}
		return b
	}
	return Timeouts{
		Connect:        pick(t.Connect, d.Connect),
		TLSHandshake:   pick(t.TLSHandshake, d.TLSHandshake),
		ResponseHeader: pick(t.ResponseHeader, d.ResponseHeader),
		Stall:          pick(t.Stall, d.Stall),
	}
}

// newDefaultTransport is go-containerregistry's default transport (proxy
// from the environment, HTTP/2, keep-alives) with t's dial and TLS
// handshake bounds.
func newDefaultTransport(t Timeouts) *http.Transport {
	base, ok := remote.DefaultTransport.(*http.Transport)
	if !ok {
		base = http.DefaultTransport.(*http.Transport)
	}
	tr := base.Clone()
	tr.DialContext = (&net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = t.TLSHandshake
	return tr
}

// timeoutError is a Timeouts bound running out. It is a net.Error whose
// Timeout is true, so netfail counts it as unreachable and retryable.
type timeoutError struct {
	what string // "response headers", "the next bytes of the body"
	d    time.Duration
}

func (e *timeoutError) Error() string   { return fmt.Sprintf("no %s within %v", e.what, e.d) }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

var _ net.Error = (*timeoutError)(nil)

// watchdog cancels one try of a request when a bound runs out: the
// request's context is what makes a transport give up a blocked dial,
// write or read, whatever transport it is.
type watchdog struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	header *timeoutError
	stall  *timeoutError

	mu       sync.Mutex
	timer    *time.Timer
	why      error // what the timer running out means
	answered bool  // the answer's headers are in: the upload no longer arms it
}

func newWatchdog(ctx context.Context, t Timeouts) *watchdog {
	w := &watchdog{
		header: &timeoutError{"response headers", t.ResponseHeader},
		stall:  &timeoutError{"bytes of the body", t.Stall},
	}
	w.ctx, w.cancel = context.WithCancelCause(ctx)
	return w
}

// arm (re)starts the timer: if it runs out before disarm, the try ends
// with why. An upload's arm and disarm (upload true) do nothing once the
// answer is in: the transport may still be reading the request's body
// while the caller reads the answer's, which has the timer then.
func (w *watchdog) arm(why *timeoutError, upload bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if upload && w.answered {
		return
	}
	w.why = why
	if w.timer == nil {
		w.timer = time.AfterFunc(why.d, w.fire)
	} else {
		w.timer.Reset(why.d)
	}
}

func (w *watchdog) disarm(upload bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if upload && w.answered {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}

func (w *watchdog) fire() {
	w.mu.Lock()
	why := w.why
	w.mu.Unlock()
	w.cancel(why)
}

// gotAnswer stops the header bound once the answer is in.
func (w *watchdog) gotAnswer() {
	w.mu.Lock()
	w.answered = true
	w.mu.Unlock()
	w.disarm(false)
}

// release ends the try: its context is cancelled, freeing the timer.
func (w *watchdog) release() {
	w.disarm(false)
	w.cancel(context.Canceled)
}

// explain replaces err with the bound that caused it, if one did.
func (w *watchdog) explain(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var te *timeoutError
	if cause := context.Cause(w.ctx); errors.As(cause, &te) {
		return te
	}
	return err
}

// watchedBody is an answer's body whose every Read must get bytes within
// the Stall bound; Close ends the try.
type watchedBody struct {
	rc io.ReadCloser
	w  *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return b.rc.Read(p)
	}
	b.w.arm(b.w.stall, false)
	n, err := b.rc.Read(p)
	b.w.disarm(false)
	return n, b.w.explain(err)
}

func (b *watchedBody) Close() error {
	err := b.rc.Close()
	b.w.release()
	return err
}

// watchedUpload is a request's streamed body: while the transport is
// sending it, the registry must take each chunk within the Stall bound;
// once it has all been read, the header bound starts.
type watchedUpload struct {
	r io.Reader
	w *watchdog
}

func (u *watchedUpload) Read(p []byte) (int, error) {
	u.w.disarm(true) // the time our source takes is not the registry's
	n, err := u.r.Read(p)
	if err == io.EOF {
		u.w.arm(u.w.header, true)
	} else {
		u.w.arm(u.w.stall, true)
	}
	return n, err
}
