package testserver

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// StartProxyRegistry starts the registry server in distribution's proxy
// mode (a pull-through cache) of upstream, a URL such as
// "http://127.0.0.1:5000", with filesystem storage in a temp dir, on a
// free port of 127.0.0.1, and waits until it answers. It is the
// reference a mirror is compared with.
func StartProxyRegistry(t testing.TB, upstream string) *Registry {
	t.Helper()
	return startRegistry(t, "", fmt.Sprintf("proxy:\n  remoteurl: %s\n", upstream))
}

// UpstreamCounts is what a CountingProxy forwarded, by kind of request.
type UpstreamCounts struct {
	Ping                      int // GET /v2/
	ManifestHEAD, ManifestGET int
	BlobHEAD, BlobGET         int
	Other                     int
	BlobBytes                 int64 // blob response bytes forwarded
	// MaxBlobGETs is the most GETs any one blob had: 1 when each blob
	// was fetched once.
	MaxBlobGETs int
}

// Requests is every request but the pings.
func (c UpstreamCounts) Requests() int {
	return c.ManifestHEAD + c.ManifestGET + c.BlobHEAD + c.BlobGET + c.Other
}

// CountingProxy is a reverse proxy in front of a registry that counts
// the requests and blob bytes it forwards, so a test can tell what a
// mirror asked its upstream. Stop it to make the upstream unreachable
// (connections refused) while the registry behind it keeps running.
type CountingProxy struct {
	Host string // "127.0.0.1:port"
	srv  *httptest.Server

	mu       sync.Mutex
	counts   UpstreamCounts
	blobGETs map[string]int // digest -> GETs
}

// StartCountingProxy starts a counting reverse proxy to target
// ("127.0.0.1:port") on a free port of 127.0.0.1.
func StartCountingProxy(t testing.TB, target string) *CountingProxy {
	t.Helper()
	p := &CountingProxy{blobGETs: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.Transport = &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       30 * time.Second,
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && kindOf(resp.Request.URL.Path) == "blobs" {
			resp.Body = &countingBody{ReadCloser: resp.Body, p: p}
		}
		return nil
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.count(r)
		rp.ServeHTTP(w, r)
	}))
	p.Host = strings.TrimPrefix(p.srv.URL, "http://")
	t.Cleanup(p.Stop)
	return p
}

// kindOf is "manifests" or "blobs" for a distribution API path, "ping"
// for /v2/, "" otherwise.
func kindOf(path string) string {
	if path == "/v2/" || path == "/v2" {
		return "ping"
	}
	parts := strings.Split(path, "/")
	if len(parts) >= 4 {
		switch k := parts[len(parts)-2]; k {
		case "manifests", "blobs":
			return k
		}
	}
	return ""
}

func (p *CountingProxy) count(r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &p.counts
	switch kind, m := kindOf(r.URL.Path), r.Method; {
	case kind == "ping":
		c.Ping++
	case kind == "manifests" && m == http.MethodHead:
		c.ManifestHEAD++
	case kind == "manifests" && m == http.MethodGet:
		c.ManifestGET++
	case kind == "blobs" && m == http.MethodHead:
		c.BlobHEAD++
	case kind == "blobs" && m == http.MethodGet:
		c.BlobGET++
		d := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		p.blobGETs[d]++
		c.MaxBlobGETs = max(c.MaxBlobGETs, p.blobGETs[d])
	default:
		c.Other++
	}
}

// Counts returns what was forwarded since the start or the last Reset.
func (p *CountingProxy) Counts() UpstreamCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// Reset zeroes the counts.
func (p *CountingProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = UpstreamCounts{}
	p.blobGETs = map[string]int{}
}

// Stop closes the proxy's listener and connections: from then on the
// upstream refuses connections. It waits for requests in progress.
func (p *CountingProxy) Stop() { p.srv.Close() }

type countingBody struct {
	io.ReadCloser
	p *CountingProxy
}

func (b *countingBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	b.p.mu.Lock()
	b.p.counts.BlobBytes += int64(n)
	b.p.mu.Unlock()
	return n, err
}
