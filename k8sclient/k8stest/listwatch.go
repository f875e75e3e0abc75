package k8stest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
)

// selectors parses the label and field selectors of a list or watch.
func selectors(t *rtype, q url.Values) (labels.Selector, fields.Selector, *apiError) {
	ls, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		return nil, nil, newAPIError(http.StatusBadRequest, nil, "", "unable to parse requirement: "+err.Error())
	}
	fs, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		return nil, nil, newAPIError(http.StatusBadRequest, nil, "", err.Error())
	}
	for _, r := range fs.Requirements() {
		if r.Field != "metadata.name" && r.Field != "metadata.namespace" {
			return nil, nil, newAPIError(http.StatusBadRequest, nil, "",
				fmt.Sprintf("field label not supported: %s", r.Field))
		}
	}
	return ls, fs, nil
}

func matches(st *stored, ns string, ls labels.Selector, fs fields.Selector) bool {
	return (ns == "" || st.ns == ns) &&
		ls.Matches(st.labels) &&
		fs.Matches(fields.Set{"metadata.name": st.name, "metadata.namespace": st.ns})
}

func (s *Server) serveList(w *response, r *http.Request, req *request) {
	q := r.URL.Query()
	ls, fs, aerr := selectors(req.t, q)
	if aerr != nil {
		w.error(aerr)
		return
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	cont := q.Get("continue")
	proto := wantsProtobuf(r) && isBuiltin(req.t)

	s.mu.Lock()
	rv := s.rv
	var items [][]byte
	last, next := "", ""
	for _, k := range slices.Sorted(maps.Keys(req.t.objs)) {
		if cont != "" && k <= cont {
			continue
		}
		st := req.t.objs[k]
		if !matches(st, req.ns, ls, fs) {
			continue
		}
		if limit > 0 && len(items) == limit {
			// More remain. The continue token is the last key served;
			// it is opaque to clients, as the real one is.
			next = last
			break
		}
		if proto {
			items = append(items, s.protoLocked(req.t, st))
		} else {
			items = append(items, st.raw)
		}
		last = k
	}
	s.mu.Unlock()

	if proto {
		lm := metav1.ListMeta{ResourceVersion: strconv.FormatUint(rv, 10), Continue: next}
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		meta, _ := lm.Marshal()
		b = protowire.AppendBytes(b, meta)
		for _, it := range items {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendBytes(b, it)
		}
		w.protobuf(http.StatusOK, req.t, req.t.ListKind, b)
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"apiVersion":%q,"kind":%q,"metadata":{"resourceVersion":"%d"`,
		req.t.GVR.GroupVersion().String(), req.t.ListKind, rv)
	if next != "" {
		fmt.Fprintf(&b, `,"continue":%q`, next)
	}
	b.WriteString(`},"items":[`)
	for i, raw := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(raw)
	}
	b.WriteString("]}")
	w.json(http.StatusOK, b.Bytes())
}

func (s *Server) serveWatch(w *response, r *http.Request, req *request, q url.Values) {
	ls, fs, aerr := selectors(req.t, q)
	if aerr != nil {
		w.error(aerr)
		return
	}
	ctx := r.Context()
	if ts := q.Get("timeoutSeconds"); ts != "" {
		if n, err := strconv.Atoi(ts); err == nil && n > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(n)*time.Second)
			defer cancel()
		}
	}
	rvParam := q.Get("resourceVersion")
	initial := q.Get("sendInitialEvents") == "true"
	gv := req.t.GVR.GroupVersion().String()

	var frames [][]byte
	s.mu.Lock()
	cursor := s.rv
	switch {
	case initial || rvParam == "" || rvParam == "0":
		// The current state as synthetic ADDED events, then changes.
		for _, k := range slices.Sorted(maps.Keys(req.t.objs)) {
			if st := req.t.objs[k]; matches(st, req.ns, ls, fs) {
				frames = append(frames, frame(watch.Added, st.raw))
			}
		}
		if initial {
			bm := fmt.Sprintf(`{"apiVersion":%q,"kind":%q,"metadata":{"resourceVersion":"%d","annotations":{%q:"true"}}}`,
				gv, req.t.Kind, cursor, metav1.InitialEventsAnnotationKey)
			frames = append(frames, frame(watch.Bookmark, []byte(bm)))
		}
	default:
		n, err := strconv.ParseUint(rvParam, 10, 64)
		if err != nil {
			s.mu.Unlock()
			w.error(newAPIError(http.StatusBadRequest, nil, "", fmt.Sprintf("invalid resource version %q", rvParam)))
			return
		}
		cursor = n
	}
	gen := s.watchGen
	s.watches++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.watches--
		s.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	for _, f := range frames {
		w.write(f)
	}
	w.Flush()
	for {
		s.mu.Lock()
		if cursor < s.minRV {
			s.mu.Unlock()
			st := newAPIError(http.StatusGone, nil, "",
				fmt.Sprintf("too old resource version: %d (%d)", cursor, s.minRV)).status()
			raw, _ := json.Marshal(st)
			w.write(frame(watch.Error, raw))
			w.Flush()
			return
		}
		i := sort.Search(len(s.events), func(i int) bool { return s.events[i].rv > cursor })
		frames = frames[:0]
		for _, e := range s.events[i:] {
			if e.res == req.t && matches(e.obj, req.ns, ls, fs) {
				frames = append(frames, frame(e.typ, e.obj.raw))
			}
		}
		cursor = max(cursor, s.rv)
		changed := s.changed
		s.mu.Unlock()
		for _, f := range frames {
			w.write(f)
		}
		if len(frames) > 0 {
			w.Flush()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-gen:
			return
		case <-s.done:
			return
		}
	}
}

func frame(typ watch.EventType, raw []byte) []byte {
	b := make([]byte, 0, len(raw)+32)
	b = fmt.Appendf(b, `{"type":%q,"object":`, typ)
	b = append(b, raw...)
	return append(b, "}\n"...)
}
