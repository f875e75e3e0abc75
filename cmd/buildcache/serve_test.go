package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/crypto/bcrypt"

	"github.com/buildcache/buildcache/internal/testimage"
)

// serveWait bounds every wait for the serve command in these tests.
const serveWait = 30 * time.Second

// logBuffer is stderr shared by the command's goroutines and the test,
// which waits for lines to appear in it.
type logBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{}, 1)} }

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.b.Write(p)
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return n, err
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// await returns the first submatch of re in the log once it appears.
func (l *logBuffer) await(t *testing.T, re *regexp.Regexp, exited <-chan int) string {
	t.Helper()
	deadline := time.After(serveWait)
	for {
		if m := re.FindStringSubmatch(l.String()); m != nil {
			return m[1]
		}
		select {
		case <-l.changed:
		case code := <-exited:
			t.Fatalf("serve exited %d before logging %v:\n%s", code, re, l.String())
		case <-deadline:
			t.Fatalf("serve logged no %v within %v:\n%s", re, serveWait, l.String())
		}
	}
}

// server is a running `buildcache serve`.
type server struct {
	addr   string
	cache  string
	stderr *logBuffer
	stop   context.CancelFunc
	exited chan int
}

var (
	listeningRe = regexp.MustCompile(`msg=listening addr=(\S+)`)
	metricsRe   = regexp.MustCompile(`metrics_addr=(\S+)`)
)

// startServe runs `buildcache serve` in-process on 127.0.0.1:0 with a
// fresh cache directory and waits for it to listen.
func startServe(t *testing.T, args ...string) *server {
	t.Helper()
	return startServeIn(t, t.TempDir(), args...)
}

// startServeIn is startServe with the cache in dir.
func startServeIn(t *testing.T, dir string, args ...string) *server {
	t.Helper()
	s := &server{cache: dir, stderr: newLogBuffer(), exited: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	argv := append([]string{"--cache", s.cache, "serve", "--listen", "127.0.0.1:0", "--shutdown-timeout", "5s"}, args...)
	go func() { s.exited <- run(ctx, argv, io.Discard, s.stderr) }()
	s.addr = s.stderr.await(t, listeningRe, s.exited)
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.exited:
		case <-time.After(serveWait):
			t.Errorf("serve did not stop within %v", serveWait)
		}
	})
	return s
}

// shutdown cancels the command's context, as SIGTERM does, and returns
// its exit code.
func (s *server) shutdown(t *testing.T) int {
	t.Helper()
	s.stop()
	select {
	case code := <-s.exited:
		s.exited <- code // for the cleanup
		return code
	case <-time.After(serveWait):
		t.Fatalf("serve did not stop within %v:\n%s", serveWait, s.stderr)
		return -1
	}
}

// countingUpstream is an in-process registry counting the requests it
// serves, with an image pushed as team/app:v1. While failing is set, it
// answers every manifest request 503 with Retry-After: 60.
type countingUpstream struct {
	host     string
	top      v1.Hash
	requests atomic.Int64
	failing  atomic.Bool
}

func newCountingUpstream(t *testing.T) *countingUpstream {
	t.Helper()
	u := &countingUpstream{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		if u.failing.Load() && strings.Contains(r.URL.Path, "/manifests/") {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.host = strings.TrimPrefix(srv.URL, "http://")
	img := testimage.ForTest(t)
	u.top = img.Push(u.host+"/team/app:v1", img.RandomIndex([]string{"linux/amd64", "linux/arm64"}, 4<<10, 2))
	u.requests.Store(0)
	return u
}

// pullThrough pulls ref's every platform with go-containerregistry's
// client, reading and verifying every layer, and returns the top digest.
func pullThrough(t *testing.T, ref string, opts ...remote.Option) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r, opts...)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Fatalf("%s %s: %v", ref, d.Platform, err)
		}
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func get(t *testing.T, client *http.Client, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestServePullThrough(t *testing.T) {
	up := newCountingUpstream(t)
	s := startServe(t, "--upstream", "test.example=http://"+up.host)
	ref := s.addr + "/team/app:v1"

	if got := pullThrough(t, ref); got != up.top {
		t.Fatalf("pulled %s, pushed %s", got, up.top)
	}
	cold := up.requests.Swap(0)
	if cold == 0 {
		t.Fatal("the cold pull made no upstream request")
	}
	pullThrough(t, ref)
	if warm := up.requests.Swap(0); warm != 1 {
		t.Errorf("warm pull: %d upstream requests, want 1 (the tag's HEAD)", warm)
	}
	pullThrough(t, s.addr+"/team/app@"+up.top.String())
	if n := up.requests.Load(); n != 0 {
		t.Errorf("pull by a stored digest: %d upstream requests, want 0", n)
	}

	resp, body := get(t, http.DefaultClient, "http://"+s.addr+"/metrics", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	for _, family := range []string{"buildcache_resolver_resolves_total", "buildcache_resolver_fetched_bytes_total", "buildcache_layer_cache_hits_total",
		"buildcache_mirror_digest_mismatches_total", "buildcache_mirror_upstream_fetches"} {
		if !strings.Contains(string(body), family) {
			t.Errorf("/metrics lacks %s", family)
		}
	}

	if code := s.shutdown(t); code != 0 {
		t.Fatalf("serve exited %d after its context ended, want 0:\n%s", code, s.stderr)
	}
	logs := s.stderr.String()
	for _, want := range []string{
		"msg=request method=GET path=/v2/team/app/manifests/v1 status=200",
		"msg=request method=GET path=/metrics status=200",
		"msg=stopped",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, logs)
		}
	}

	// The store was closed: its lifetime counters hold what serve did.
	stats := cliJSON(t, 0, "--cache", s.cache, "stats")
	counters, _ := stats["counters"].(map[string]any)
	if n, _ := counters["bytes_out"].(float64); n == 0 {
		t.Errorf("stats after serve: counters %v, want the bytes served", counters)
	}
}

func TestServeUpstreamsByNamespace(t *testing.T) {
	a, b := newCountingUpstream(t), newCountingUpstream(t)
	s := startServe(t, "--upstream", "a.example=http://"+a.host, "--upstream", "b.example=http://"+b.host, "--default-upstream", "b.example")
	accept := http.Header{"Accept": {"application/vnd.oci.image.index.v1+json"}}
	for _, tc := range []struct {
		query string
		want  v1.Hash
	}{{"?ns=a.example", a.top}, {"?ns=b.example", b.top}, {"", b.top}} {
		resp, _ := get(t, http.DefaultClient, "http://"+s.addr+"/v2/team/app/manifests/v1"+tc.query, accept)
		if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != http.StatusOK || got != tc.want.String() {
			t.Errorf("manifest%s: %s digest %s, want %s", tc.query, resp.Status, got, tc.want)
		}
	}
	resp, _ := get(t, http.DefaultClient, "http://"+s.addr+"/v2/team/app/manifests/v1?ns=elsewhere.example", accept)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unmapped ns: %s, want 404", resp.Status)
	}
	if logs := s.stderr.String(); !strings.Contains(logs, "ns=a.example status=200") {
		t.Errorf("the access log lacks the ns:\n%s", logs)
	}
}

// checkUnauthorized asserts a 401 with a challenge and an OCI error body.
func checkUnauthorized(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("%s: %s, want 401", what, resp.Status)
	}
	if c := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(c, "Basic realm=") {
		t.Errorf("%s: WWW-Authenticate %q", what, c)
	}
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNAUTHORIZED" {
		t.Errorf("%s: body %q, want an UNAUTHORIZED error", what, body)
	}
}

func TestServeBasicAuth(t *testing.T) {
	up := newCountingUpstream(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, file, "# users\nci:"+string(hash)+"\n")
	s := startServe(t, "--upstream", "test.example=http://"+up.host, "--htpasswd", file)

	resp, body := get(t, http.DefaultClient, "http://"+s.addr+"/v2/", nil)
	checkUnauthorized(t, "no credentials", resp, body)
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+"/v2/team/app/manifests/v1", nil)
	req.SetBasicAuth("ci", "wrong")
	wrong, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(wrong.Body)
	wrong.Body.Close()
	checkUnauthorized(t, "a wrong password", wrong, body)
	resp, body = get(t, http.DefaultClient, "http://"+s.addr+"/metrics", nil)
	checkUnauthorized(t, "/metrics without credentials", resp, body)
	if n := up.requests.Load(); n != 0 {
		t.Errorf("refused requests reached the upstream %d times", n)
	}

	auth := remote.WithAuth(&authn.Basic{Username: "ci", Password: "s3cret-pass"})
	if got := pullThrough(t, s.addr+"/team/app:v1", auth); got != up.top {
		t.Fatalf("pulled %s, pushed %s", got, up.top)
	}
	if strings.Contains(s.stderr.String(), "s3cret-pass") {
		t.Error("the password reached the log")
	}
}

func TestServeBearerToken(t *testing.T) {
	up := newCountingUpstream(t)
	file := filepath.Join(t.TempDir(), "token")
	writeFile(t, file, "tok-0123456789\n")
	s := startServe(t, "--upstream", "test.example=http://"+up.host, "--token-file", file)
	url := "http://" + s.addr + "/v2/team/app/manifests/v1"

	resp, body := get(t, http.DefaultClient, url, nil)
	checkUnauthorized(t, "no token", resp, body)
	resp, body = get(t, http.DefaultClient, url, http.Header{"Authorization": {"Bearer tok-wrong"}})
	checkUnauthorized(t, "a wrong token", resp, body)
	resp, _ = get(t, http.DefaultClient, url, http.Header{"Authorization": {"Bearer tok-0123456789"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the right bearer token: %s", resp.Status)
	}
	// The token as a basic password: what `docker login` sends.
	auth := remote.WithAuth(&authn.Basic{Username: "anyone", Password: "tok-0123456789"})
	if got := pullThrough(t, s.addr+"/team/app:v1", auth); got != up.top {
		t.Fatalf("pulled %s, pushed %s", got, up.top)
	}
	if strings.Contains(s.stderr.String(), "tok-0123456789") {
		t.Error("the token reached the log")
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "buildcache test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestServeTLS(t *testing.T) {
	up := newCountingUpstream(t)
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	s := startServe(t, "--upstream", "test.example=http://"+up.host, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.Contains(s.stderr.String(), "url=https://") {
		t.Errorf("the listening record does not say https:\n%s", s.stderr)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	if got := pullThrough(t, s.addr+"/team/app:v1", remote.WithTransport(tr)); got != up.top {
		t.Fatalf("pulled %s, pushed %s", got, up.top)
	}

	old := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}}
	defer old.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: old}).Get("https://" + s.addr + "/v2/"); err == nil {
		resp.Body.Close()
		t.Error("a TLS 1.1 client was served")
	}
}

func TestServeMetricsListen(t *testing.T) {
	up := newCountingUpstream(t)
	file := filepath.Join(t.TempDir(), "token")
	writeFile(t, file, "tok")
	s := startServe(t, "--upstream", "test.example=http://"+up.host, "--token-file", file, "--metrics-listen", "127.0.0.1:0")
	metricsAddr := s.stderr.await(t, metricsRe, s.exited)
	// The separate listener needs no token; the mirror's serves no /metrics.
	resp, body := get(t, http.DefaultClient, "http://"+metricsAddr+"/metrics", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "buildcache_resolver_resolves_total") {
		t.Errorf("/metrics on --metrics-listen: %s\n%.300s", resp.Status, body)
	}
	resp, _ = get(t, http.DefaultClient, "http://"+s.addr+"/metrics", http.Header{"Authorization": {"Bearer tok"}})
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the mirror's listener with --metrics-listen: %s, want 404", resp.Status)
	}
}

// blockingUpstream holds blob requests until released.
type blockingUpstream struct {
	host    string
	blob    v1.Hash
	size    int64
	arrived chan struct{} // a blob request came
	release chan struct{} // closed to answer it
}

func newBlockingUpstream(t *testing.T) *blockingUpstream {
	t.Helper()
	u := &blockingUpstream{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			u.arrived <- struct{}{}
			select {
			case <-u.release:
			case <-r.Context().Done():
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-u.release:
		default:
			close(u.release)
		}
	})
	u.host = strings.TrimPrefix(srv.URL, "http://")
	img := testimage.ForTest(t)
	idx := img.RandomIndex([]string{"linux/amd64"}, 4<<10, 1)
	img.Push(u.host+"/team/app:v1", idx)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	one, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := one.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if u.blob, err = layers[0].Digest(); err != nil {
		t.Fatal(err)
	}
	if u.size, err = layers[0].Size(); err != nil {
		t.Fatal(err)
	}
	return u
}

// A request in progress at SIGTERM finishes within the grace period.
func TestServeShutdownFinishesInFlight(t *testing.T) {
	up := newBlockingUpstream(t)
	s := startServe(t, "--upstream", "test.example=http://"+up.host, "--shutdown-timeout", "30s")
	type result struct {
		status int
		n      int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + s.addr + "/v2/team/app/blobs/" + up.blob.String())
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, len(b), err}
	}()
	waitFor(t, up.arrived, "the blob request upstream")
	s.stop()
	s.stderr.await(t, regexp.MustCompile(`msg="(shutting down)"`), nil)
	close(up.release)
	select {
	case r := <-done:
		if r.err != nil || r.status != http.StatusOK || int64(r.n) != up.size {
			t.Errorf("the request in flight at shutdown: status %d, %d bytes, %v; want 200 and the whole blob", r.status, r.n, r.err)
		}
	case <-time.After(serveWait):
		t.Fatal("the request in flight did not finish")
	}
	if code := s.shutdown(t); code != 0 {
		t.Errorf("serve exited %d, want 0:\n%s", code, s.stderr)
	}
}

// A request still in progress when the grace period ends is cancelled,
// and nothing of it is stored.
func TestServeShutdownAbandonsAfterGrace(t *testing.T) {
	up := newBlockingUpstream(t)
	s := startServe(t, "--upstream", "test.example=http://"+up.host, "--shutdown-timeout", "50ms")
	failed := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + s.addr + "/v2/team/app/blobs/" + up.blob.String())
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				err = nil
			} else if err == nil {
				err = io.ErrUnexpectedEOF
			}
		}
		failed <- err
	}()
	waitFor(t, up.arrived, "the blob request upstream")
	if code := s.shutdown(t); code != 0 {
		t.Errorf("serve exited %d, want 0:\n%s", code, s.stderr)
	}
	select {
	case err := <-failed:
		if err == nil {
			t.Error("the request abandoned at shutdown was answered 200")
		}
	case <-time.After(serveWait):
		t.Fatal("the abandoned request did not end")
	}
	if _, err := os.Stat(filepath.Join(s.cache, "blobs", "sha256", up.blob.Hex)); !os.IsNotExist(err) {
		t.Errorf("the abandoned blob is in the store (stat: %v)", err)
	}
	out := cliJSON(t, 0, "--cache", s.cache, "verify")
	if bad, _ := out["bad"].([]any); len(bad) != 0 {
		t.Errorf("verify after an abandoned download: %v", out)
	}
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(serveWait):
		t.Fatalf("waited %v for %s", serveWait, what)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestServeBadFlags(t *testing.T) {
	dir := t.TempDir()
	md5 := filepath.Join(dir, "md5")
	writeFile(t, md5, "ci:$apr1$abcdefgh$0123456789abcdefghijkl\n")
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, "\n")
	up := "--upstream=test.example=http://127.0.0.1:1"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no upstream", nil, "at least one --upstream"},
		{"upstream with a path", []string{"--upstream", "docker.io=https://registry-1.docker.io/v2"}, "scheme://host"},
		{"upstream scheme", []string{"--upstream", "docker.io=ftp://example.com"}, "want http or https"},
		{"upstream twice", []string{up, up}, "given twice"},
		{"unknown default", []string{up, "--default-upstream", "ghcr.io"}, "not one of the --upstream"},
		{"remote listen", []string{up, "--listen", "0.0.0.0:5000"}, "--allow-remote"},
		{"remote metrics", []string{up, "--metrics-listen", ":9090"}, "--allow-remote"},
		{"listen not host:port", []string{up, "--listen", "5000"}, "host:port"},
		{"cert without key", []string{up, "--tls-cert", md5}, "go together"},
		{"missing htpasswd", []string{up, "--htpasswd", filepath.Join(dir, "none")}, "--htpasswd"},
		{"md5 htpasswd", []string{up, "--htpasswd", md5}, "not a bcrypt hash"},
		{"empty token", []string{up, "--token-file", empty}, "empty bearer token"},
		{"log format", []string{up, "--log-format", "xml"}, "text or json"},
		{"duration", []string{up, "--shutdown-timeout", "soon"}, "shutdown-timeout"},
		{"fetch bound", []string{up, "--max-upstream-fetches", "0"}, "--max-upstream-fetches 0"},
		{"stall timeout", []string{up, "--stall-timeout", "-1s"}, "stall-timeout"},
		{"unknown flag", []string{up, "--listen-on", "x"}, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--cache", t.TempDir(), "serve", "--listen", "127.0.0.1:0"}, tc.args...)
			_, stderr, code := cli(t, args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d:\n%s", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr)
			}
		})
	}
}
