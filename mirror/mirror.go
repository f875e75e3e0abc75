package mirror

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/buildcache/buildcache/cache"
)

// Mirror is an http.Handler serving the read side of the OCI distribution
// API from a store, fetching through its Upstream (a registry.Resolver)
// what the store lacks. It is safe for concurrent use.
type Mirror struct {
	up    Upstream
	store cache.LayerCache // up.Store()
	o     options

	// The downloads of blobs not yet stored, which outlive the requests
	// that started them (see ingest); Close ends them.
	ctx      context.Context
	cancel   context.CancelCauseFunc
	running  sync.WaitGroup
	ingestMu sync.Mutex
	ingests  map[string]*ingest // "repo@digest" -> the download in flight
	fetches  *fetchLimit

	tags  tagView   // the store's tags, for when the upstream cannot answer: tagview.go
	scope scope     // which digests each repository may be served: scope.go
	sizes blobSizes // of the blobs the manifests served list

	stats struct {
		failures         failureCounts
		digestMismatches atomic.Uint64
	}
}

type options struct {
	defaultUpstream string            // host[:port], "" for none
	upstreams       map[string]string // ?ns= value -> host[:port]
	maxAge          time.Duration
	tempDir         string
	maxFetches      int
	stallTimeout    time.Duration
}

// Option configures a Mirror.
type Option func(*options) error

// WithUpstream sets the upstream asked when a request names none (no
// containerd ?ns= query): a registry host ("registry-1.docker.io",
// "ghcr.io", "127.0.0.1:5000"), optionally with a scheme, which is
// dropped: the resolver's client decides HTTP or HTTPS (plain HTTP for
// loopback and its WithInsecureRegistries). Default: none, and such
// requests are answered NAME_UNKNOWN.
func WithUpstream(host string) Option {
	return func(o *options) error {
		h, err := upstreamHost(host)
		if err != nil {
			return err
		}
		o.defaultUpstream = h
		return nil
	}
}

// WithUpstreams maps the registry a request names with containerd's
// ?ns=<registry> query ("docker.io", "ghcr.io") to the upstream host that
// serves it ("registry-1.docker.io"). A request whose ns is not mapped is
// answered NAME_UNKNOWN: the mirror is not an open proxy to any host a
// client names. Default: no mapping.
func WithUpstreams(m map[string]string) Option {
	return func(o *options) error {
		for ns, host := range m {
			h, err := upstreamHost(host)
			if err != nil {
				return fmt.Errorf("mirror: upstream for %q: %w", ns, err)
			}
			if ns == "" {
				return errors.New("mirror: WithUpstreams: empty registry name")
			}
			o.upstreams[ns] = h
		}
		return nil
	}
}

// WithMaxAge serves a tag with no upstream request when it was
// revalidated less than d ago. Default 0: one HEAD per tag request.
func WithMaxAge(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("mirror: negative max age %v", d)
		}
		o.maxAge = d
		return nil
	}
}

// WithTempDir sets where a blob being downloaded is kept while its
// clients read it when the store cannot take it in itself (it is no
// cache.Ingester: localfs and a tier over it are, and keep it in their
// own temp directory, written once): one file per blob in flight, as
// large as the blob, removed when the download is over and its last
// client is done. Default: os.TempDir().
func WithTempDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("mirror: WithTempDir: empty directory")
		}
		o.tempDir = dir
		return nil
	}
}

// WithMaxUpstreamFetches bounds the blob downloads from upstreams in
// progress at once; the downloads of further blobs wait in line for one
// to end, their clients waiting too (a client leaving takes its place in
// line with it). Each download holds an upstream connection and two
// descriptors of its file. Default DefaultMaxUpstreamFetches (32).
func WithMaxUpstreamFetches(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("mirror: WithMaxUpstreamFetches(%d): must be at least 1", n)
		}
		o.maxFetches = n
		return nil
	}
}

// DefaultStallTimeout is how long a response may make no progress unless
// WithStallTimeout says otherwise.
const DefaultStallTimeout = time.Minute

// WithStallTimeout closes a response whose client takes longer than d to
// take a write (up to 256 KiB; the connection's buffers full): a client
// that asks for a blob and stops reading would otherwise hold its
// connection, a file and the blob's lease for good. A response waiting
// for the upstream is not stalled. 0 never closes one. Default
// DefaultStallTimeout (1 minute).
func WithStallTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("mirror: negative stall timeout %v", d)
		}
		o.stallTimeout = d
		return nil
	}
}

func upstreamHost(s string) (string, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	h = strings.TrimSuffix(h, "/")
	if h == "" || strings.ContainsAny(h, "/?#@ ") {
		return "", fmt.Errorf("mirror: upstream %q is not a registry host", s)
	}
	return h, nil
}

// New returns a mirror serving up's store (up.Store()), fetching what it
// lacks through up, a *registry.Resolver.
func New(up Upstream, opts ...Option) (*Mirror, error) {
	if up == nil {
		return nil, errors.New("mirror: New: nil upstream")
	}
	store := up.Store()
	if store == nil {
		return nil, errors.New("mirror: New: the upstream has no store")
	}
	o := options{upstreams: map[string]string{}, maxFetches: DefaultMaxUpstreamFetches, stallTimeout: DefaultStallTimeout}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Mirror{up: up, store: store, o: o, ctx: ctx, cancel: cancel, ingests: map[string]*ingest{},
		fetches: newFetchLimit(o.maxFetches), tags: tagView{now: time.Now}}, nil
}

// Stats returns what the mirror counted: its failed responses by reason,
// the blob downloads that did not match their digest, and the downloads
// in progress and waiting (metrics.NewMirrorCollector exports them).
func (m *Mirror) Stats() cache.MirrorStats {
	return cache.MirrorStats{
		FailedResponses:        m.stats.failures.snapshot(),
		DigestMismatches:       m.stats.digestMismatches.Load(),
		UpstreamFetches:        m.fetches.running.Load(),
		UpstreamFetchesWaiting: m.fetches.waiting.Load(),
	}
}

// Close abandons the blob downloads in flight, whose clients' responses
// are cut and of which nothing is stored, and returns once they have
// ended and their temp files are gone. Call it after http.Server.Shutdown
// (which waits for the requests, and so for the downloads they read) or
// instead of waiting for them. Requests for blobs not yet stored are then
// answered 503.
func (m *Mirror) Close() error {
	m.cancel(ErrClosed)
	m.running.Wait()
	return nil
}

// ServeHTTP answers the distribution API's read requests.
func (m *Mirror) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	w := m.newRespWriter(rw)
	completed := false
	defer func() {
		if completed {
			w.end()
		} else {
			w.cut(req.Context())
		}
	}()
	m.serve(w, req)
	completed = true
}

func (m *Mirror) serve(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	switch req.Method {
	case http.MethodGet, http.MethodHead:
	default:
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "this mirror is read-only")
		return
	}
	if req.URL.Path == "/v2/" || req.URL.Path == "/v2" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if req.Method == http.MethodGet {
			_, _ = w.Write([]byte("{}"))
		}
		return
	}
	name, kind, ref, ok := route(req.URL.Path)
	if !ok || (kind != "manifests" && kind != "blobs" && kind != "referrers" && !tagsRoute(kind, ref)) {
		writeError(w, http.StatusNotFound, codeUnsupported, "not a distribution API read path")
		return
	}
	if !validName(name) {
		writeError(w, http.StatusBadRequest, codeNameInvalid, "invalid repository name")
		return
	}
	repo, ok := m.upstreamRepo(req, name)
	if !ok {
		writeError(w, http.StatusNotFound, codeNameUnknown, "no upstream for this repository")
		return
	}
	ctx, release := m.lease(req.Context())
	defer release()
	switch kind {
	case "manifests":
		m.serveManifest(ctx, w, req, repo, ref)
	case "tags":
		m.serveTags(ctx, w, req, repo, name)
	case "referrers":
		m.serveReferrers(ctx, w, req, repo, ref) // referrers.go
	default:
		m.serveBlob(ctx, w, req, repo, ref)
	}
}

// upstreamRepo returns "host/name" for the upstream the request selects.
func (m *Mirror) upstreamRepo(req *http.Request, name string) (string, bool) {
	host := m.o.defaultUpstream
	hub := dockerHub(host)
	if ns := req.URL.Query().Get("ns"); ns != "" {
		h, ok := m.o.upstreams[ns]
		if !ok {
			return "", false
		}
		host, hub = h, dockerHub(ns) || dockerHub(h)
	}
	if host == "" {
		return "", false
	}
	if hub && !strings.Contains(name, "/") {
		name = "library/" + name
	}
	return host + "/" + name, true
}

// lease keeps the store's collectors off what a request fetches and
// serves until it is answered, when the store can lease.
func (m *Mirror) lease(ctx context.Context) (context.Context, func()) {
	l, ok := cache.As[cache.Leaser](m.store)
	if !ok {
		return ctx, func() {}
	}
	leased, end, err := l.Lease(ctx)
	if err != nil {
		return ctx, func() {} // the resolver's own leases still cover its fetches
	}
	return leased, func() { _ = end() }
}
