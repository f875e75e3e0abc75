package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// respWriter is the ResponseWriter a Mirror's handlers write to: it
// closes a response the client does not read (each write must complete
// within the stall timeout, through http.ResponseController's write
// deadlines) and counts why a response failed, once.
type respWriter struct {
	http.ResponseWriter
	m       *Mirror
	rc      *http.ResponseController
	armed   time.Time // when the write deadline was last pushed back; zero: none set
	stalled bool      // a write missed its deadline
	failed  bool      // the failure was counted
}

func (m *Mirror) newRespWriter(w http.ResponseWriter) *respWriter {
	return &respWriter{ResponseWriter: w, m: m, rc: http.NewResponseController(w)}
}

// arm pushes the write deadline back to a stall timeout from now. It
// does so at most every sixteenth of the timeout, to keep writes cheap:
// a response is closed after between 15/16 and all of the stall timeout
// without progress.
func (w *respWriter) arm() {
	d := w.m.o.stallTimeout
	if d <= 0 {
		return
	}
	now := time.Now()
	if !w.armed.IsZero() && now.Sub(w.armed) < d/16 {
		return
	}
	if w.rc.SetWriteDeadline(now.Add(d)) == nil {
		w.armed = now
	}
}

func (w *respWriter) Write(p []byte) (int, error) {
	w.arm()
	n, err := w.ResponseWriter.Write(p)
	w.check(err)
	return n, err
}

// readFromChunk is how much of a ReadFrom goes under one deadline.
const readFromChunk = 4 << 20

// ReadFrom keeps the server's own ReadFrom (sendfile from a file) when
// the writer underneath has one, in chunks that each get a deadline.
func (w *respWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	var total int64
	for {
		chunk := &io.LimitedReader{R: src, N: readFromChunk}
		outer, limited := src.(*io.LimitedReader)
		if limited { // one level of limits, as sendfile wants
			chunk = &io.LimitedReader{R: outer.R, N: min(outer.N, readFromChunk)}
		}
		want := chunk.N
		w.arm()
		n, err := rf.ReadFrom(chunk)
		total += n
		if limited {
			outer.N -= n
		}
		w.check(err)
		if err != nil || n < want || want == 0 {
			return total, err
		}
	}
}

func (w *respWriter) check(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		w.stalled = true
	}
}

// Flush implements http.Flusher, under the deadline.
func (w *respWriter) Flush() {
	w.arm()
	w.check(w.rc.Flush())
}

// Unwrap lets http.ResponseController and noteFailure reach the writer
// underneath.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *respWriter) noteFailure(reason string, _ error) {
	if !w.failed {
		w.failed = true
		w.m.stats.failures.add(reason)
	}
}

// end finishes a response that the handler completed: what is buffered is
// sent under the deadline, which is then lifted for the connection's next
// request.
func (w *respWriter) end() {
	if w.armed.IsZero() {
		return
	}
	w.Flush()
	_ = w.rc.SetWriteDeadline(time.Time{})
}

// cut records a response the handler cut short (it panicked, with
// http.ErrAbortHandler as a rule) without saying why.
func (w *respWriter) cut(ctx context.Context) {
	switch {
	case w.failed:
	case w.stalled:
		noteFailure(w, ReasonStalled, nil)
	case ctx.Err() != nil:
		noteFailure(w, ReasonClientGone, nil)
	default:
		noteFailure(w, ReasonAborted, nil)
	}
}
