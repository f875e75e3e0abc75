package k8stest

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// request is a parsed API request.
type request struct {
	t       *rtype
	ns      string
	name    string
	sub     string
	verb    string
	cluster bool // no namespace in the path
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := &response{ResponseWriter: w, n: &s.bytesSent}
	req, aerr := s.parse(r)
	if aerr != nil {
		s.count("", "")
		rw.error(aerr)
		return
	}
	s.count(req.verb, req.t.GVR.Resource)
	if aerr := s.authorize(req); aerr != nil {
		rw.error(aerr)
		return
	}
	f := s.matchFault(req)
	if f != nil && !s.applyFault(rw, r, req, f) {
		return
	}
	if f != nil && f.HoldAnswer != nil && req.verb != VerbWatch {
		rec := httptest.NewRecorder()
		s.serve(&response{ResponseWriter: rec, n: new(atomic.Int64)}, r, req)
		if !await(s, r, f.HoldAnswer) {
			return
		}
		maps.Copy(rw.Header(), rec.Header())
		rw.WriteHeader(rec.Code)
		rw.write(rec.Body.Bytes())
		return
	}
	s.serve(rw, r, req)
}

func (s *Server) serve(w *response, r *http.Request, req *request) {
	switch req.verb {
	case VerbGet:
		s.serveGet(w, r, req)
	case VerbList:
		s.serveList(w, r, req)
	case VerbWatch:
		s.serveWatch(w, r, req, r.URL.Query())
	case VerbCreate, VerbUpdate, VerbPatch:
		s.serveWrite(w, r, req)
	case VerbDelete:
		s.mu.Lock()
		aerr := s.deleteLocked(req.t, req.ns, req.name)
		s.mu.Unlock()
		if aerr != nil {
			w.error(aerr)
			return
		}
		w.value(http.StatusOK, &metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusSuccess,
			Details:  &metav1.StatusDetails{Name: req.name, Group: req.t.GVR.Group, Kind: req.t.GVR.Resource},
		})
	default:
		w.error(newAPIError(http.StatusMethodNotAllowed, nil, "", ""))
	}
}

func (s *Server) count(verb, resource string) {
	s.mu.Lock()
	s.counts[[2]string{verb, resource}]++
	s.mu.Unlock()
}

// parse maps a request to a resource type, namespace, name and verb.
func (s *Server) parse(r *http.Request) (*request, *apiError) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var gv schema.GroupVersion
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		gv, rest = schema.GroupVersion{Version: parts[1]}, parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		gv, rest = schema.GroupVersion{Group: parts[1], Version: parts[2]}, parts[3:]
	default:
		return nil, newAPIError(http.StatusNotFound, nil, "", "the server could not find the requested resource")
	}
	req := &request{cluster: true}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		req.ns, req.cluster, rest = rest[1], false, rest[2:]
	}
	if len(rest) == 0 || len(rest) > 3 {
		return nil, newAPIError(http.StatusNotFound, nil, "", "the server could not find the requested resource")
	}
	s.mu.Lock()
	req.t = s.types[gv.WithResource(rest[0])]
	s.mu.Unlock()
	if req.t == nil || (!req.t.Namespaced && !req.cluster) {
		return nil, newAPIError(http.StatusNotFound, nil, "", "the server could not find the requested resource")
	}
	if len(rest) > 1 {
		req.name = rest[1]
	}
	if len(rest) > 2 {
		if rest[2] != "status" {
			return nil, newAPIError(http.StatusNotFound, nil, "", "the server could not find the requested resource")
		}
		req.sub = rest[2]
	}
	named := req.name != ""
	switch {
	case r.Method == http.MethodGet && named:
		req.verb = VerbGet
	case r.Method == http.MethodGet:
		req.verb = VerbList
		if w := r.URL.Query().Get("watch"); w == "true" || w == "1" {
			req.verb = VerbWatch
		}
	case r.Method == http.MethodPost && !named:
		req.verb = VerbCreate
	case r.Method == http.MethodPut && named:
		req.verb = VerbUpdate
	case r.Method == http.MethodPatch && named:
		req.verb = VerbPatch
	case r.Method == http.MethodDelete && named:
		req.verb = VerbDelete
	default:
		return nil, newAPIError(http.StatusMethodNotAllowed, nil, "", "")
	}
	if req.t.Namespaced && req.cluster && req.verb != VerbList && req.verb != VerbWatch {
		return nil, newAPIError(http.StatusNotFound, nil, "", "the server could not find the requested resource")
	}
	return req, nil
}

func (s *Server) authorize(req *request) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.allowed == nil || s.allowed[req.verb] {
		return nil
	}
	scope := "at the cluster scope"
	if !req.cluster {
		scope = fmt.Sprintf("in the namespace %q", req.ns)
	}
	msg := fmt.Sprintf("%s is forbidden: User \"system:serviceaccount:default:buildcache\" cannot %s resource %q in API group %q %s",
		req.t.GVR.GroupResource(), req.verb, req.t.GVR.Resource, req.t.GVR.Group, scope)
	return newAPIError(http.StatusForbidden, req.t, req.name, msg)
}

func (s *Server) matchFault(req *request) *fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.faults {
		if f.left == 0 ||
			(f.Verb != "" && f.Verb != req.verb) ||
			(f.Resource != "" && f.Resource != req.t.GVR.Resource) ||
			(f.Namespace != "" && f.Namespace != req.ns) ||
			(f.Name != "" && f.Name != req.name) {
			continue
		}
		if f.left > 0 {
			f.left--
		}
		return f
	}
	return nil
}

// await waits for ch; it reports false if the request or the server ended
// first.
func await[T any](s *Server, r *http.Request, ch <-chan T) bool {
	select {
	case <-ch:
		return true
	case <-r.Context().Done():
		return false
	case <-s.done:
		return false
	}
}

// applyFault waits and answers as f says; it reports whether the request
// is still to be served.
func (s *Server) applyFault(w *response, r *http.Request, req *request, f *fault) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		if !await(s, r, t.C) {
			return false
		}
	}
	if f.Hold != nil && !await(s, r, f.Hold) {
		return false
	}
	if f.Code == 0 {
		return true
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	w.error(newAPIError(f.Code, req.t, req.name, f.Message))
	return false
}

func (s *Server) serveGet(w *response, r *http.Request, req *request) {
	s.mu.Lock()
	st := req.t.objs[req.ns+"/"+req.name]
	var pb []byte
	if st != nil && wantsProtobuf(r) {
		pb = s.protoLocked(req.t, st)
	}
	s.mu.Unlock()
	if st == nil {
		w.error(notFound(req.t, req.name))
		return
	}
	w.object(http.StatusOK, req.t, st, pb)
}
