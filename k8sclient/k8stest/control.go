package k8stest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Count returns how many requests the server received for verb and
// resource (plural name) since it started or since ResetCounts; "" matches
// every verb or every resource. Requests that failed, by fault or
// otherwise, count too.
func (s *Server) Count(verb, resource string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, c := range s.counts {
		if (verb == "" || k[0] == verb) && (resource == "" || k[1] == resource) {
			n += c
		}
	}
	return n
}

// BytesSent returns the bytes of response bodies written since the server
// started or since ResetCounts, watch streams included.
func (s *Server) BytesSent() int64 { return s.bytesSent.Load() }

// ResetCounts sets Count and BytesSent back to zero.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.counts)
	s.bytesSent.Store(0)
}

// Inject adds a fault; the function it returns removes it.
func (s *Server) Inject(f Fault) (remove func()) {
	ft := &fault{Fault: f, left: f.Times}
	if f.Times <= 0 {
		ft.left = -1
	}
	s.mu.Lock()
	s.faults = append(s.faults, ft)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.faults = slices.DeleteFunc(s.faults, func(x *fault) bool { return x == ft })
	}
}

// Allow restricts the verbs callers may use, as an RBAC Role granting only
// them would: other verbs are answered 403 Forbidden. With no verbs, every
// verb is allowed again.
func (s *Server) Allow(verbs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(verbs) == 0 {
		s.allowed = nil
		return
	}
	s.allowed = make(map[string]bool)
	for _, v := range verbs {
		s.allowed[v] = true
	}
}

// CloseWatches ends every watch stream open now, as a server restart or a
// load balancer timeout would.
func (s *Server) CloseWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.watchGen)
	s.watchGen = make(chan struct{})
}

// Watches returns the number of watch streams open now.
func (s *Server) Watches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watches
}

// Compact forgets every event so far, as etcd compaction does: a watch
// that resumes from an older resourceVersion fails with 410 Gone, and
// watches open now that have not sent every event yet end with it.
func (s *Server) Compact() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.minRV = s.rv
	s.events = nil
}

// ResourceVersion returns the server's current resourceVersion.
func (s *Server) ResourceVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strconv.FormatUint(s.rv, 10)
}

// Create stores a new object as a POST would, without a request: for
// setting up a test and for changes made behind a client's back. Its
// namespace is the object's.
func (s *Server) Create(gvr schema.GroupVersionResource, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	raw, err := json.Marshal(obj.Object)
	if err != nil {
		return nil, err
	}
	return s.direct(gvr, func(t *rtype) (*stored, *apiError) { return s.createLocked(t, obj.GetNamespace(), raw) })
}

// Update replaces an object as a PUT would (409 Conflict if obj carries a
// resourceVersion that is not the current one), without a request.
func (s *Server) Update(gvr schema.GroupVersionResource, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	raw, err := json.Marshal(obj.Object)
	if err != nil {
		return nil, err
	}
	return s.direct(gvr, func(t *rtype) (*stored, *apiError) {
		return s.updateLocked(t, obj.GetNamespace(), obj.GetName(), raw)
	})
}

// Delete removes an object as a DELETE would, without a request.
func (s *Server) Delete(gvr schema.GroupVersionResource, namespace, name string) error {
	_, err := s.direct(gvr, func(t *rtype) (*stored, *apiError) { return nil, s.deleteLocked(t, namespace, name) })
	return err
}

// Get returns an object as the server holds it, without a request.
func (s *Server) Get(gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	return s.direct(gvr, func(t *rtype) (*stored, *apiError) {
		if st := t.objs[namespace+"/"+name]; st != nil {
			return st, nil
		}
		return nil, notFound(t, name)
	})
}

// direct runs fn on gvr's type under s.mu, for the methods above that act
// on the server's state without a request, and returns the object fn
// stored or found, decoded (nil if none), or fn's error as a StatusError.
func (s *Server) direct(gvr schema.GroupVersionResource, fn func(t *rtype) (*stored, *apiError)) (*unstructured.Unstructured, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.types[gvr]
	if t == nil {
		return nil, fmt.Errorf("k8stest: %s is not registered", gvr)
	}
	st, aerr := fn(t)
	if aerr != nil {
		return nil, aerr.statusError()
	}
	if st == nil {
		return nil, nil
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(st.raw); err != nil {
		return nil, err
	}
	return u, nil
}
