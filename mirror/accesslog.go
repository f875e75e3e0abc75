package mirror

import (
	"log/slog"
	"net/http"
	"time"
)

// AccessLog returns h logging one record per request to logger: method,
// path, the containerd ns query if any, status, bytes of body written,
// duration and the client's address. Nothing else of the query and no
// header is logged, so credentials never reach the log. Answers below 500
// are logged at Info, others at Warn, and a response cut short (the
// handler aborted it: bytes that failed verification) at Error with
// aborted=true. A response that failed or was cut short gets the reason
// the mirror gave (reason=, one of the Reason constants) and the error
// behind it (error=; errors never hold credentials).
func AccessLog(h http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		lw := &loggingWriter{ResponseWriter: w}
		aborted := true
		defer func() {
			level := slog.LevelInfo
			status := lw.status
			if status == 0 {
				status = http.StatusOK
			}
			if status >= 500 {
				level = slog.LevelWarn
			}
			attrs := []slog.Attr{
				slog.String("method", req.Method),
				slog.String("path", req.URL.Path),
			}
			if ns := req.URL.Query().Get("ns"); ns != "" {
				attrs = append(attrs, slog.String("ns", ns))
			}
			attrs = append(attrs,
				slog.Int("status", status),
				slog.Int64("bytes", lw.bytes),
				slog.Duration("duration", time.Since(start)),
				slog.String("remote", req.RemoteAddr),
			)
			if aborted {
				level = slog.LevelError
				attrs = append(attrs, slog.Bool("aborted", true))
			}
			if lw.reason != "" {
				attrs = append(attrs, slog.String("reason", lw.reason))
			}
			if lw.err != nil {
				attrs = append(attrs, slog.String("error", lw.err.Error()))
			}
			logger.LogAttrs(req.Context(), level, "request", attrs...)
		}()
		h.ServeHTTP(lw, req)
		aborted = false
	})
}

// loggingWriter counts what a handler writes.
type loggingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	reason string // why the response failed, if the handler said (noteFailure)
	err    error
}

func (w *loggingWriter) noteFailure(reason string, err error) {
	if w.reason == "" {
		w.reason, w.err = reason, err
	}
}

func (w *loggingWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *loggingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Flush passes a flush on when the underlying writer can.
func (w *loggingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *loggingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
