package k8stest

import (
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
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
