package k8stest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// The resource types every Server serves.
var (
	// JobsGVR is batch/v1 Jobs, namespaced.
	JobsGVR = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
	// PackageRepositoriesGVR is Glasskube's PackageRepository custom
	// resource, cluster-scoped.
	PackageRepositoriesGVR = schema.GroupVersionResource{Group: "packages.glasskube.dev", Version: "v1alpha1", Resource: "packagerepositories"}
)

// Resource describes a resource type a Server serves.
type Resource struct {
	GVR        schema.GroupVersionResource
	Kind       string // "Job"
	ListKind   string // "JobList"; if blank, Kind + "List"
	Namespaced bool
}

// The verbs Count, Allow and Fault name, as RBAC does.
const (
	VerbGet    = "get"
	VerbList   = "list"
	VerbWatch  = "watch"
	VerbCreate = "create"
	VerbUpdate = "update"
	VerbPatch  = "patch"
	VerbDelete = "delete"
)

// A Fault changes the answers to the requests it matches: it waits for
// Delay, then until Hold is closed, then answers with Code (and the
// Retry-After header if RetryAfter is set) instead of serving the request;
// with Code 0 the request is then served as usual. A request that matches
// a fault is still counted. Faults are matched in the order they were
// injected; the first that matches applies.
type Fault struct {
	Verb      string // a Verb constant; "" matches every verb
	Resource  string // plural resource name, "jobs"; "" matches every resource
	Namespace string // "" matches every namespace
	Name      string // "" matches every name (and collections)

	Code       int    // HTTP status to answer with, 0 to serve the request
	Message    string // the Status message; if blank, one fitting the code
	RetryAfter string // the Retry-After header's value, if not blank

	Delay time.Duration   // how long to wait before answering
	Hold  <-chan struct{} // if not nil, answer only once it is closed

	// HoldAnswer, if not nil, lets the request be served at once (against
	// the state of now) but holds its answer until it is closed: a slow
	// network between the client and a server that has read an older
	// state. Not for watches.
	HoldAnswer <-chan struct{}

	// Times is how many requests the fault applies to; 0 means every
	// request until the function Inject returned is called.
	Times int
}

type fault struct {
	Fault
	left int // requests still to match; -1: unlimited
}

// Server is the API-server double. Create it with NewServer and stop it
// with Close. All methods are safe for concurrent use.
type Server struct {
	// URL is the server's base URL, http://127.0.0.1:port.
	URL string

	hs   *httptest.Server
	done chan struct{} // closed by Close

	mu       sync.Mutex
	types    map[schema.GroupVersionResource]*rtype
	rv       uint64
	events   []event       // in resourceVersion order
	minRV    uint64        // a watch from below this gets 410 Gone
	changed  chan struct{} // closed and replaced on every event
	watchGen chan struct{} // closed by CloseWatches
	watches  int           // watch streams open
	faults   []*fault
	allowed  map[string]bool // nil: every verb
	counts   map[[2]string]int
	uids     uint64

	bytesSent atomic.Int64
	closeOnce sync.Once
}

type rtype struct {
	Resource
	objs map[string]*stored // by namespace + "/" + name
}

type stored struct {
	ns, name string
	labels   labels.Set
	raw      []byte // the object's JSON, resourceVersion included
	pb       []byte // its protobuf message, without envelope; made on first use, under Server.mu
}

type event struct {
	rv  uint64
	typ watch.EventType
	res *rtype
	obj *stored
}

// NewServer starts a Server on 127.0.0.1 serving Jobs and
// PackageRepositories, with no objects.
func NewServer() *Server {
	s := &Server{
		done:     make(chan struct{}),
		types:    make(map[schema.GroupVersionResource]*rtype),
		changed:  make(chan struct{}),
		watchGen: make(chan struct{}),
		counts:   make(map[[2]string]int),
	}
	s.Register(Resource{GVR: JobsGVR, Kind: "Job", Namespaced: true})
	s.Register(Resource{GVR: PackageRepositoriesGVR, Kind: "PackageRepository"})
	s.hs = httptest.NewServer(s)
	s.URL = s.hs.URL
	return s
}

// Config returns a rest.Config for the server as a user would write one:
// only the host is set, so client-go's defaults apply (QPS 5, Burst 10,
// JSON).
func (s *Server) Config() *rest.Config {
	return &rest.Config{Host: s.URL}
}

// Close ends open watches and held requests, then stops the server.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.hs.Close()
	})
}

// Register adds a resource type, replacing one with the same GVR (and its
// objects).
func (s *Server) Register(r Resource) {
	if r.ListKind == "" {
		r.ListKind = r.Kind + "List"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.types[r.GVR] = &rtype{Resource: r, objs: make(map[string]*stored)}
}

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
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.typeLocked(gvr)
	if err != nil {
		return nil, err
	}
	st, aerr := s.createLocked(t, obj.GetNamespace(), raw)
	return decodeOrErr(st, aerr)
}

// Update replaces an object as a PUT would (409 Conflict if obj carries a
// resourceVersion that is not the current one), without a request.
func (s *Server) Update(gvr schema.GroupVersionResource, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	raw, err := json.Marshal(obj.Object)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.typeLocked(gvr)
	if err != nil {
		return nil, err
	}
	st, aerr := s.updateLocked(t, obj.GetNamespace(), obj.GetName(), raw)
	return decodeOrErr(st, aerr)
}

// Delete removes an object as a DELETE would, without a request.
func (s *Server) Delete(gvr schema.GroupVersionResource, namespace, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.typeLocked(gvr)
	if err != nil {
		return err
	}
	if aerr := s.deleteLocked(t, namespace, name); aerr != nil {
		return aerr.statusError()
	}
	return nil
}

// Get returns an object as the server holds it, without a request.
func (s *Server) Get(gvr schema.GroupVersionResource, namespace, name string) (*unstructured.Unstructured, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.typeLocked(gvr)
	if err != nil {
		return nil, err
	}
	st := t.objs[namespace+"/"+name]
	if st == nil {
		return nil, notFound(t, name).statusError()
	}
	return decodeOrErr(st, nil)
}

func (s *Server) typeLocked(gvr schema.GroupVersionResource) (*rtype, error) {
	t := s.types[gvr]
	if t == nil {
		return nil, fmt.Errorf("k8stest: %s is not registered", gvr)
	}
	return t, nil
}

func decodeOrErr(st *stored, aerr *apiError) (*unstructured.Unstructured, error) {
	if aerr != nil {
		return nil, aerr.statusError()
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(st.raw); err != nil {
		return nil, err
	}
	return u, nil
}

// apiError is a failure answered as a metav1.Status.
type apiError struct {
	code    int
	reason  metav1.StatusReason
	message string
	details *metav1.StatusDetails
}

func (e *apiError) status() *metav1.Status {
	return &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  e.message,
		Reason:   e.reason,
		Details:  e.details,
		Code:     int32(e.code),
	}
}

func (e *apiError) statusError() error { return &apierrors.StatusError{ErrStatus: *e.status()} }

// reasons are the Status reasons kube-apiserver gives with each code.
var reasons = map[int]metav1.StatusReason{
	http.StatusBadRequest:           metav1.StatusReasonBadRequest,
	http.StatusUnauthorized:         metav1.StatusReasonUnauthorized,
	http.StatusForbidden:            metav1.StatusReasonForbidden,
	http.StatusNotFound:             metav1.StatusReasonNotFound,
	http.StatusMethodNotAllowed:     metav1.StatusReasonMethodNotAllowed,
	http.StatusConflict:             metav1.StatusReasonConflict,
	http.StatusGone:                 metav1.StatusReasonExpired,
	http.StatusUnsupportedMediaType: metav1.StatusReasonUnsupportedMediaType,
	http.StatusUnprocessableEntity:  metav1.StatusReasonInvalid,
	http.StatusTooManyRequests:      metav1.StatusReasonTooManyRequests,
	http.StatusInternalServerError:  metav1.StatusReasonInternalError,
	http.StatusServiceUnavailable:   metav1.StatusReasonServiceUnavailable,
	http.StatusGatewayTimeout:       metav1.StatusReasonTimeout,
}

func newAPIError(code int, t *rtype, name, message string) *apiError {
	reason, ok := reasons[code]
	if !ok {
		reason = metav1.StatusReasonUnknown
	}
	var details *metav1.StatusDetails
	if t != nil {
		details = &metav1.StatusDetails{Name: name, Group: t.GVR.Group, Kind: t.GVR.Resource}
		if message == "" {
			message = fmt.Sprintf("%s %q: %s", t.GVR.GroupResource(), name, strings.ToLower(http.StatusText(code)))
		}
	}
	if message == "" {
		message = http.StatusText(code)
	}
	return &apiError{code: code, reason: reason, message: message, details: details}
}

func notFound(t *rtype, name string) *apiError {
	return newAPIError(http.StatusNotFound, t, name, fmt.Sprintf("%s %q not found", t.GVR.GroupResource(), name))
}

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
	cw := &countingWriter{ResponseWriter: w, n: &s.bytesSent}
	req, aerr := s.parse(r)
	if aerr != nil {
		s.count("", "")
		writeJSON(cw, aerr.code, aerr.status())
		return
	}
	s.count(req.verb, req.t.GVR.Resource)
	if aerr := s.authorize(req); aerr != nil {
		writeJSON(cw, aerr.code, aerr.status())
		return
	}
	f := s.matchFault(req)
	if f != nil && !s.applyFault(cw, r, req, f) {
		return
	}
	if f != nil && f.HoldAnswer != nil && req.verb != VerbWatch {
		rec := httptest.NewRecorder()
		s.serve(&countingWriter{ResponseWriter: rec, n: new(atomic.Int64)}, r, req)
		select {
		case <-f.HoldAnswer:
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
		maps.Copy(cw.Header(), rec.Header())
		cw.WriteHeader(rec.Code)
		cw.Write(rec.Body.Bytes())
		return
	}
	s.serve(cw, r, req)
}

func (s *Server) serve(cw *countingWriter, r *http.Request, req *request) {
	switch req.verb {
	case VerbGet:
		s.serveGet(cw, r, req)
	case VerbList:
		s.serveList(cw, r, req)
	case VerbWatch:
		s.serveWatch(cw, r, req, r.URL.Query())
	case VerbCreate, VerbUpdate, VerbPatch:
		s.serveWrite(cw, r, req)
	case VerbDelete:
		s.mu.Lock()
		aerr := s.deleteLocked(req.t, req.ns, req.name)
		s.mu.Unlock()
		if aerr != nil {
			writeJSON(cw, aerr.code, aerr.status())
			return
		}
		writeJSON(cw, http.StatusOK, &metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusSuccess,
			Details:  &metav1.StatusDetails{Name: req.name, Group: req.t.GVR.Group, Kind: req.t.GVR.Resource},
		})
	default:
		aerr := newAPIError(http.StatusMethodNotAllowed, nil, "", "")
		writeJSON(cw, aerr.code, aerr.status())
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

// applyFault waits and answers as f says; it reports whether the request
// is still to be served.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, req *request, f *fault) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return false
		case <-s.done:
			return false
		}
	}
	if f.Hold != nil {
		select {
		case <-f.Hold:
		case <-r.Context().Done():
			return false
		case <-s.done:
			return false
		}
	}
	if f.Code == 0 {
		return true
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	aerr := newAPIError(f.Code, req.t, req.name, f.Message)
	writeJSON(w, aerr.code, aerr.status())
	return false
}

func (s *Server) serveGet(w http.ResponseWriter, r *http.Request, req *request) {
	s.mu.Lock()
	st := req.t.objs[req.ns+"/"+req.name]
	var pb []byte
	if st != nil && wantsProtobuf(r) {
		pb = s.protoLocked(req.t, st)
	}
	s.mu.Unlock()
	if st == nil {
		aerr := notFound(req.t, req.name)
		writeJSON(w, aerr.code, aerr.status())
		return
	}
	if pb != nil {
		writeProtobuf(w, http.StatusOK, envelope(req.t.GVR.GroupVersion().String(), req.t.Kind, pb))
		return
	}
	writeRaw(w, http.StatusOK, st.raw)
}

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

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, req *request) {
	q := r.URL.Query()
	ls, fs, aerr := selectors(req.t, q)
	if aerr != nil {
		writeJSON(w, aerr.code, aerr.status())
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
		writeProtobuf(w, http.StatusOK, envelope(req.t.GVR.GroupVersion().String(), req.t.ListKind, b))
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
	writeRaw(w, http.StatusOK, b.Bytes())
}

// Protobuf, which kube-apiserver speaks for built-in types and which
// client-go's typed clients ask for first.
const protobufType = "application/vnd.kubernetes.protobuf"

var protoPrefix = []byte{'k', '8', 's', 0}

func wantsProtobuf(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Accept"), protobufType)
}

// isBuiltin reports whether t has a Go type in client-go's scheme, and so
// a protobuf encoding.
func isBuiltin(t *rtype) bool {
	return clientscheme.Scheme.Recognizes(t.GVR.GroupVersion().WithKind(t.Kind))
}

// protoLocked returns st's protobuf message, or nil if t has none.
func (s *Server) protoLocked(t *rtype, st *stored) []byte {
	if st.pb != nil || !isBuiltin(t) {
		return st.pb
	}
	obj, err := clientscheme.Scheme.New(t.GVR.GroupVersion().WithKind(t.Kind))
	if err != nil {
		return nil
	}
	m, ok := obj.(interface{ Marshal() ([]byte, error) })
	if !ok || json.Unmarshal(st.raw, obj) != nil {
		return nil
	}
	st.pb, _ = m.Marshal()
	return st.pb
}

// envelope wraps a protobuf message as kube-apiserver does: the magic
// prefix, then a runtime.Unknown naming its type.
func envelope(apiVersion, kind string, msg []byte) []byte {
	u := runtime.Unknown{TypeMeta: runtime.TypeMeta{APIVersion: apiVersion, Kind: kind}, Raw: msg}
	b, _ := u.Marshal()
	return append(slices.Clip(protoPrefix), b...)
}

func writeProtobuf(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", protobufType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

// jsonBody returns a request's body as JSON, decoding protobuf (which
// typed clients send for built-in types) into it.
func jsonBody(r *http.Request, body []byte) ([]byte, *apiError) {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), protobufType) {
		return body, nil
	}
	obj, _, err := protobuf.NewSerializer(clientscheme.Scheme, clientscheme.Scheme).Decode(body, nil, nil)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, nil, "", "the protobuf body does not decode: "+err.Error())
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, nil, "", err.Error())
	}
	gvks, _, err := clientscheme.Scheme.ObjectKinds(obj)
	if err == nil && len(gvks) > 0 {
		u := &unstructured.Unstructured{Object: m}
		u.SetGroupVersionKind(gvks[0])
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, nil, "", err.Error())
	}
	return b, nil
}

func (s *Server) serveWatch(w *countingWriter, r *http.Request, req *request, q url.Values) {
	ls, fs, aerr := selectors(req.t, q)
	if aerr != nil {
		writeJSON(w, aerr.code, aerr.status())
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
			aerr := newAPIError(http.StatusBadRequest, nil, "", fmt.Sprintf("invalid resource version %q", rvParam))
			writeJSON(w, aerr.code, aerr.status())
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
		w.Write(f)
	}
	w.Flush()
	for {
		s.mu.Lock()
		if cursor < s.minRV {
			s.mu.Unlock()
			st := newAPIError(http.StatusGone, nil, "",
				fmt.Sprintf("too old resource version: %d (%d)", cursor, s.minRV)).status()
			raw, _ := json.Marshal(st)
			w.Write(frame(watch.Error, raw))
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
			w.Write(f)
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

func (s *Server) serveWrite(w http.ResponseWriter, r *http.Request, req *request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		aerr := newAPIError(http.StatusBadRequest, nil, "", err.Error())
		writeJSON(w, aerr.code, aerr.status())
		return
	}
	if req.verb != VerbPatch {
		var aerr *apiError
		if body, aerr = jsonBody(r, body); aerr != nil {
			writeJSON(w, aerr.code, aerr.status())
			return
		}
	}
	var st *stored
	var aerr *apiError
	var pb []byte
	s.mu.Lock()
	switch req.verb {
	case VerbCreate:
		st, aerr = s.createLocked(req.t, req.ns, body)
	case VerbUpdate:
		st, aerr = s.updateLocked(req.t, req.ns, req.name, body)
	case VerbPatch:
		st, aerr = s.patchLocked(req.t, req.ns, req.name, r.Header.Get("Content-Type"), body)
	}
	if aerr == nil && wantsProtobuf(r) {
		pb = s.protoLocked(req.t, st)
	}
	s.mu.Unlock()
	if aerr != nil {
		writeJSON(w, aerr.code, aerr.status())
		return
	}
	code := http.StatusOK
	if req.verb == VerbCreate {
		code = http.StatusCreated
	}
	if pb != nil {
		writeProtobuf(w, code, envelope(req.t.GVR.GroupVersion().String(), req.t.Kind, pb))
		return
	}
	writeRaw(w, code, st.raw)
}

func decodeObject(raw []byte) (*unstructured.Unstructured, *apiError) {
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, newAPIError(http.StatusBadRequest, nil, "", "the body is not a JSON object: "+err.Error())
	}
	return &unstructured.Unstructured{Object: m}, nil
}

func (s *Server) createLocked(t *rtype, ns string, raw []byte) (*stored, *apiError) {
	u, aerr := decodeObject(raw)
	if aerr != nil {
		return nil, aerr
	}
	if t.Namespaced {
		if ns == "" {
			ns = u.GetNamespace()
		}
		if ns == "" {
			return nil, newAPIError(http.StatusBadRequest, nil, "", "the namespace of the object is empty")
		}
		u.SetNamespace(ns)
	} else {
		u.SetNamespace("")
		ns = ""
	}
	s.uids++
	if u.GetName() == "" {
		if u.GetGenerateName() == "" {
			return nil, newAPIError(http.StatusUnprocessableEntity, t, "", "metadata.name: Required value: name or generateName is required")
		}
		u.SetName(fmt.Sprintf("%s%05x", u.GetGenerateName(), s.uids))
	}
	if t.objs[ns+"/"+u.GetName()] != nil {
		return nil, newAPIError(http.StatusConflict, t, u.GetName(),
			fmt.Sprintf("%s %q already exists", t.GVR.GroupResource(), u.GetName())).withReason(metav1.StatusReasonAlreadyExists)
	}
	u.SetAPIVersion(t.GVR.GroupVersion().String())
	u.SetKind(t.Kind)
	u.SetUID(types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012x", s.uids)))
	u.SetCreationTimestamp(metav1.NewTime(time.Now().UTC().Truncate(time.Second)))
	u.SetGeneration(1)
	if len(u.GetManagedFields()) == 0 {
		u.SetManagedFields(managedFields(u, metav1.ManagedFieldsOperationUpdate))
	}
	return s.commitLocked(t, watch.Added, u)
}

func (s *Server) updateLocked(t *rtype, ns, name string, raw []byte) (*stored, *apiError) {
	u, aerr := decodeObject(raw)
	if aerr != nil {
		return nil, aerr
	}
	if !t.Namespaced {
		ns = ""
	}
	if u.GetName() != name {
		return nil, newAPIError(http.StatusBadRequest, t, name,
			fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", u.GetName(), name))
	}
	old := t.objs[ns+"/"+name]
	if old == nil {
		return nil, notFound(t, name)
	}
	prev, aerr := decodeObject(old.raw)
	if aerr != nil {
		return nil, aerr
	}
	return s.replaceLocked(t, prev, u)
}

// replaceLocked stores u in place of prev, keeping what the server owns.
func (s *Server) replaceLocked(t *rtype, prev, u *unstructured.Unstructured) (*stored, *apiError) {
	if rv := u.GetResourceVersion(); rv != "" && rv != prev.GetResourceVersion() {
		return nil, newAPIError(http.StatusConflict, t, u.GetName(),
			fmt.Sprintf("Operation cannot be fulfilled on %s %q: the object has been modified; please apply your changes to the latest version and try again",
				t.GVR.GroupResource(), u.GetName()))
	}
	u.SetNamespace(prev.GetNamespace())
	u.SetAPIVersion(t.GVR.GroupVersion().String())
	u.SetKind(t.Kind)
	u.SetUID(prev.GetUID())
	u.SetCreationTimestamp(prev.GetCreationTimestamp())
	gen := prev.GetGeneration()
	if !reflect.DeepEqual(prev.Object["spec"], u.Object["spec"]) {
		gen++
	}
	u.SetGeneration(gen)
	if len(u.GetManagedFields()) == 0 {
		// Omitted managedFields are kept, as the real server keeps them.
		u.SetManagedFields(prev.GetManagedFields())
	}
	return s.commitLocked(t, watch.Modified, u)
}

func (s *Server) patchLocked(t *rtype, ns, name, contentType string, patch []byte) (*stored, *apiError) {
	if !t.Namespaced {
		ns = ""
	}
	old := t.objs[ns+"/"+name]
	if old == nil {
		return nil, notFound(t, name)
	}
	switch mt, _, _ := strings.Cut(contentType, ";"); types.PatchType(strings.TrimSpace(mt)) {
	case types.MergePatchType, types.StrategicMergePatchType:
	default:
		return nil, newAPIError(http.StatusUnsupportedMediaType, t, name,
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: %s, %s", types.MergePatchType, types.StrategicMergePatchType))
	}
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, newAPIError(http.StatusBadRequest, t, name, "the patch is not JSON: "+err.Error())
	}
	prev, aerr := decodeObject(old.raw)
	if aerr != nil {
		return nil, aerr
	}
	cur, _ := decodeObject(old.raw)
	merged, ok := mergePatch(cur.Object, p).(map[string]any)
	if !ok {
		return nil, newAPIError(http.StatusUnprocessableEntity, t, name, "the patch does not leave an object")
	}
	u := &unstructured.Unstructured{Object: merged}
	u.SetName(name)
	if u.GetResourceVersion() == prev.GetResourceVersion() {
		// Not named by the patch: unconditional.
		u.SetResourceVersion("")
	}
	return s.replaceLocked(t, prev, u)
}

// mergePatch applies an RFC 7386 JSON merge patch.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
		} else {
			tm[k] = mergePatch(tm[k], v)
		}
	}
	return tm
}

func (s *Server) deleteLocked(t *rtype, ns, name string) *apiError {
	if !t.Namespaced {
		ns = ""
	}
	old := t.objs[ns+"/"+name]
	if old == nil {
		return notFound(t, name)
	}
	u, aerr := decodeObject(old.raw)
	if aerr != nil {
		return aerr
	}
	_, aerr = s.commitLocked(t, watch.Deleted, u)
	return aerr
}

// commitLocked gives u the next resourceVersion, stores it (or removes it
// for Deleted) and records the event.
func (s *Server) commitLocked(t *rtype, typ watch.EventType, u *unstructured.Unstructured) (*stored, *apiError) {
	s.rv++
	u.SetResourceVersion(strconv.FormatUint(s.rv, 10))
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return nil, newAPIError(http.StatusInternalServerError, t, u.GetName(), err.Error())
	}
	st := &stored{ns: u.GetNamespace(), name: u.GetName(), labels: labels.Set(u.GetLabels()), raw: raw}
	key := st.ns + "/" + st.name
	if typ == watch.Deleted {
		delete(t.objs, key)
	} else {
		t.objs[key] = st
	}
	s.events = append(s.events, event{rv: s.rv, typ: typ, res: t, obj: st})
	close(s.changed)
	s.changed = make(chan struct{})
	return st, nil
}

func (e *apiError) withReason(r metav1.StatusReason) *apiError {
	e.reason = r
	return e
}

// managedFields returns a managedFields entry naming every field of u
// outside status, as a field manager's would.
func managedFields(u *unstructured.Unstructured, op metav1.ManagedFieldsOperationType) []metav1.ManagedFieldsEntry {
	set := fieldSet(u.Object, true)
	raw, _ := json.Marshal(set)
	now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	return []metav1.ManagedFieldsEntry{{
		Manager:    "k8stest",
		Operation:  op,
		APIVersion: u.GetAPIVersion(),
		Time:       &now,
		FieldsType: "FieldsV1",
		FieldsV1:   &metav1.FieldsV1{Raw: raw},
	}}
}

func fieldSet(v any, top bool) map[string]any {
	out := map[string]any{}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if top && (k == "status" || k == "apiVersion" || k == "kind") {
				continue
			}
			if top && k == "metadata" {
				md, _ := x.(map[string]any)
				x = map[string]any{"labels": md["labels"], "annotations": md["annotations"]}
			}
			if x == nil {
				continue
			}
			out["f:"+k] = fieldSet(x, false)
		}
	case []any:
		for i, x := range v {
			if m, ok := x.(map[string]any); ok {
				if name, ok := m["name"].(string); ok {
					out[fmt.Sprintf(`k:{"name":%q}`, name)] = fieldSet(m, false)
					continue
				}
			}
			out[fmt.Sprintf("i:%d", i)] = map[string]any{}
		}
		out["."] = map[string]any{}
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeRaw(w, code, raw)
}

func writeRaw(w http.ResponseWriter, code int, raw []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(code)
	w.Write(raw)
}

// countingWriter counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
