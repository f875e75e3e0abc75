package k8stest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"
)

// response writes the server's answers and counts their body bytes into
// n (BytesSent). Bodies go through write only: the embedded
// ResponseWriter's Write is not counted, so nothing calls it.
type response struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *response) write(b []byte) {
	n, _ := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
}

// Flush sends what is buffered, for watch streams.
func (w *response) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// body answers code with b as the whole body.
func (w *response) body(code int, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.write(b)
}

// json answers code with raw, which is JSON already.
func (w *response) json(code int, raw []byte) { w.body(code, "application/json", raw) }

// value answers code with v encoded as JSON.
func (w *response) value(code int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		w.body(http.StatusInternalServerError, "text/plain; charset=utf-8", []byte(err.Error()+"\n"))
		return
	}
	w.json(code, raw)
}

// error answers with e as a metav1.Status.
func (w *response) error(e *apiError) { w.value(e.code, e.status()) }

// protobuf answers code with msg, a protobuf message of t's kind, in
// kube-apiserver's envelope.
func (w *response) protobuf(code int, t *rtype, kind string, msg []byte) {
	w.body(code, protobufType, envelope(t.GVR.GroupVersion().String(), kind, msg))
}

// object answers code with st: in protobuf if pb, its message, is set (the
// client asked for it and t has one), else in JSON.
func (w *response) object(code int, t *rtype, st *stored, pb []byte) {
	if pb != nil {
		w.protobuf(code, t, t.Kind, pb)
		return
	}
	w.json(code, st.raw)
}
