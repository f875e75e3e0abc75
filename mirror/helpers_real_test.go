package mirror_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/regclient"
)

// countingTransport counts the requests a mirror's resolver sends
// upstream, the /v2/ ping aside, by method and kind.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    map[string]int // "GET manifests", "HEAD blobs", …
}

func newCountingTransport() *countingTransport {
	return &countingTransport{base: http.DefaultTransport, n: map[string]int{}}
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if k := requestKind(r); k != "" {
		c.mu.Lock()
		c.n[k]++
		c.mu.Unlock()
	}
	return c.base.RoundTrip(r)
}

// total is the number of requests counted since the last reset.
func (c *countingTransport) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

// counts returns what was counted since the last reset, and resets.
func (c *countingTransport) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

// requestKind is "<method> manifests", "<method> blobs" or "<method>
// tags" for the distribution API's requests, "" for the /v2/ ping and
// token requests.
func requestKind(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v2/") && strings.Contains(p, "/manifests/"):
		return r.Method + " manifests"
	case strings.HasPrefix(p, "/v2/") && strings.Contains(p, "/blobs/"):
		return r.Method + " blobs"
	case strings.HasPrefix(p, "/v2/") && strings.HasSuffix(p, "/tags/list"):
		return r.Method + " tags"
	}
	return ""
}

// servedMirror is a mirror on a loopback port whose client requests and
// upstream requests are counted.
type servedMirror struct {
	srv      *httptest.Server
	upstream *countingTransport // what the mirror asked its upstream
	mu       sync.Mutex
	served   map[string]int // what clients asked the mirror, as requestKind
	nsSeen   atomic.Bool    // a client sent containerd's ?ns= query
}

func (m *servedMirror) host() string { return strings.TrimPrefix(m.srv.URL, "http://") }

// clientCounts returns what clients asked since the last call, and resets.
func (m *servedMirror) clientCounts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.served
	m.served = map[string]int{}
	return n
}

// startMirror serves a mirror of upstreamHost over store: the default
// upstream and the ?ns= mapping of that host to itself (containerd and
// BuildKit name the registry a mirror stands for with ?ns=).
func startMirror(t *testing.T, upstreamHost string, store cache.LayerCache, opts ...mirror.Option) *servedMirror {
	t.Helper()
	sm := &servedMirror{upstream: newCountingTransport(), served: map[string]int{}}
	res := newResolver(t, store, regclient.WithTransport(sm.upstream))
	m, err := mirror.New(res, append([]mirror.Option{
		mirror.WithUpstream(upstreamHost),
		mirror.WithUpstreams(map[string]string{upstreamHost: upstreamHost}),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	sm.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if k := requestKind(r); k != "" {
			sm.mu.Lock()
			sm.served[k]++
			sm.mu.Unlock()
		}
		if r.URL.Query().Has("ns") {
			sm.nsSeen.Store(true)
		}
		m.ServeHTTP(w, r)
	}))
	t.Cleanup(sm.srv.Close)
	return sm
}

// startLocalMirror is startMirror over a fresh localfs store.
func startLocalMirror(t *testing.T, upstreamHost string, opts ...mirror.Option) *servedMirror {
	t.Helper()
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return startMirror(t, upstreamHost, store, opts...)
}

// requireTool finds a client binary: testserver.RequireTool.
func requireTool(t *testing.T, env, name, hint string) string {
	t.Helper()
	return testserver.RequireTool(t, env, name, hint)
}
