package testserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// KubeInstallHint says how to get what StartKube needs.
const KubeInstallHint = "apt-get install etcd-server; build kube-apiserver v1.36.3 from " +
	"internal/testserver/kubeapiserver into $(go env GOPATH)/bin (scripts/test does it), " +
	"or set BUILDCACHE_ETCD_BIN and BUILDCACHE_KUBE_APISERVER_BIN"

// The users of a Kube's token file. Admin is in system:masters; the others
// have no rights until a test binds a Role or ClusterRole to them.
const (
	KubeAdmin   = "admin"
	KubeLimited = "limited" // for tests of a client with only some verbs
	KubeNobody  = "nobody"  // for tests of a client RBAC refuses everything
)

// Kube is a running kube-apiserver with its own etcd, both on 127.0.0.1
// with their state in a temp dir. It authenticates bearer tokens from a
// token file (Token) and authorizes with RBAC. There is no
// controller-manager: Jobs never run, and objects with finalizers (a
// Foreground delete) are never removed.
type Kube struct {
	URL     string // "https://127.0.0.1:port"; its certificate is self-signed
	EtcdURL string // "http://127.0.0.1:port"

	dir     string
	apiBin  string
	apiArgs []string
	api     *exec.Cmd
	apiDone chan struct{} // closed when api has exited
	apiLog  *LockedBuffer
	etcd    *exec.Cmd
	etcdLog *LockedBuffer
	tokens  map[string]string
}

// Token returns the bearer token of user (KubeAdmin, KubeLimited or
// KubeNobody).
func (k *Kube) Token(user string) string { return k.tokens[user] }

// HTTPClient returns an HTTP client that trusts the API server's
// self-signed certificate without checking it, for plain requests.
func (k *Kube) HTTPClient() *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
}

// Log returns what kube-apiserver has logged since it was last started.
func (k *Kube) Log() string { return k.apiLog.String() }

// kubeBinaries finds etcd and kube-apiserver: the environment, PATH, and
// $(go env GOPATH)/bin, where scripts/test builds kube-apiserver.
func kubeBinaries() (etcd, api string, err error) {
	etcd, err = findBinary("BUILDCACHE_ETCD_BIN", "etcd")
	if err != nil {
		return "", "", err
	}
	api, err = findBinary("BUILDCACHE_KUBE_APISERVER_BIN", "kube-apiserver")
	return etcd, api, err
}

func findBinary(env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			p := filepath.Join(dir, "bin", name)
			if info, err := os.Stat(p); err == nil && !info.IsDir() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no %s found: %s: %w", name, KubeInstallHint, errUnavailable)
}

var sharedKube sharedServer[*Kube]

// SharedKube returns one etcd and kube-apiserver for every test of the
// test binary that calls it, started by the first (about 5 s). Tests share
// them, so each should work in a namespace of its own and bind RBAC only
// there, and restart the API server (RestartAPIServer) only when no other
// test runs in parallel. Without the binaries the test skips (fails under
// CI). Call StopSharedKube from TestMain after m.Run.
func SharedKube(t testing.TB) *Kube {
	t.Helper()
	k := sharedKube.get(t, launchKube)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log (last 8 KiB):\n%s", tail(k.Log(), 8<<10))
		}
	})
	return k
}

// StopSharedKube stops the servers SharedKube started, if any, and
// removes their state.
func StopSharedKube() { sharedKube.stop() }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func launchKube() (*Kube, error) {
	etcdBin, apiBin, err := kubeBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kube")
	if err != nil {
		return nil, err
	}
	k := &Kube{dir: dir, apiBin: apiBin, tokens: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			k.Stop()
		}
	}()
	if err := k.startEtcd(etcdBin); err != nil {
		return nil, err
	}
	if err := k.writeAuth(); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	k.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	k.apiArgs = []string{
		"--etcd-servers=" + k.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--authorization-mode=RBAC",
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--service-account-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.96.0.0/16",
	}
	if err := k.StartAPIServer(); err != nil {
		return nil, err
	}
	ok = true
	return k, nil
}

func (k *Kube) startEtcd(bin string) error {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	k.EtcdURL = client
	k.etcdLog = &LockedBuffer{}
	k.etcd = exec.Command(bin,
		"--data-dir", filepath.Join(k.dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer,
		"--listen-metrics-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		"--log-level", "warn")
	k.etcd.Stdout, k.etcd.Stderr = k.etcdLog, k.etcdLog
	if err := k.etcd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	if err := poll(30*time.Second, func() error {
		return getOK(http.DefaultClient, client+"/health", "")
	}); err != nil {
		return fmt.Errorf("etcd on %s did not become ready: %w\n%s", client, err, k.etcdLog)
	}
	return nil
}

// writeAuth writes the token file and the service-account signing key.
func (k *Kube) writeAuth() error {
	var csv strings.Builder
	for _, u := range []string{KubeAdmin, KubeLimited, KubeNobody} {
		var b [16]byte
		rand.Read(b[:])
		k.tokens[u] = fmt.Sprintf("%x", b)
		groups := ""
		if u == KubeAdmin {
			groups = ",system:masters"
		}
		fmt.Fprintf(&csv, "%s,%s,%s-uid%s\n", k.tokens[u], u, u, groups)
	}
	if err := os.WriteFile(filepath.Join(k.dir, "tokens.csv"), []byte(csv.String()), 0o600); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	return os.WriteFile(filepath.Join(k.dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600)
}

// StartAPIServer (re)starts kube-apiserver on the same port and etcd, and
// waits until /readyz answers ok (about 3 s).
func (k *Kube) StartAPIServer() error {
	k.apiLog = &LockedBuffer{}
	k.api = exec.Command(k.apiBin, k.apiArgs...)
	k.api.Stdout, k.api.Stderr = k.apiLog, k.apiLog
	if err := k.api.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", k.apiBin, err)
	}
	exited := make(chan struct{})
	cmd := k.api
	k.apiDone = exited
	go func() { cmd.Wait(); close(exited) }()
	hc := k.HTTPClient()
	hc.Timeout = 5 * time.Second
	if err := poll(90*time.Second, func() error {
		select {
		case <-exited:
			return fmt.Errorf("kube-apiserver exited: %v", cmd.ProcessState)
		default:
		}
		return getOK(hc, k.URL+"/readyz", k.tokens[KubeAdmin])
	}); err != nil {
		k.StopAPIServer()
		return fmt.Errorf("kube-apiserver on %s did not become ready: %w\n%s", k.URL, err, tail(k.apiLog.String(), 8<<10))
	}
	return nil
}

// StopAPIServer kills kube-apiserver (SIGKILL: no graceful shutdown, as a
// crash); etcd keeps running, and StartAPIServer brings it back.
func (k *Kube) StopAPIServer() {
	if k.api != nil && k.api.Process != nil {
		k.api.Process.Kill()
		select {
		case <-k.apiDone:
		case <-time.After(30 * time.Second):
		}
	}
	k.api = nil
}

// RestartAPIServer kills kube-apiserver and starts it again.
func (k *Kube) RestartAPIServer() error {
	k.StopAPIServer()
	return k.StartAPIServer()
}

// CompactEtcd writes a key outside the API server's prefix (so that the
// revision moves on) and compacts etcd's history up to the current
// revision: a watch resumed from any resourceVersion older than now then
// gets 410 Gone (once the API server's watch cache no longer has it: after
// a restart).
func (k *Kube) CompactEtcd(ctx context.Context) error {
	var put struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	body := `{"key":"` + b64("buildcache-test/compact") + `","value":"` + b64(time.Now().String()) + `"}`
	if err := etcdPost(ctx, k.EtcdURL+"/v3/kv/put", body, &put); err != nil {
		return err
	}
	if put.Header.Revision == "" {
		return errors.New("etcd put: no revision in the answer")
	}
	return etcdPost(ctx, k.EtcdURL+"/v3/kv/compaction", `{"revision":"`+put.Header.Revision+`","physical":true}`, nil)
}

func b64(s string) string {
	out, _ := json.Marshal([]byte(s)) // a []byte marshals as base64
	return strings.Trim(string(out), `"`)
}

func etcdPost(ctx context.Context, url, body string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Stop kills kube-apiserver and etcd and removes their state.
func (k *Kube) Stop() {
	k.StopAPIServer()
	if k.etcd != nil && k.etcd.Process != nil {
		k.etcd.Process.Kill()
		k.etcd.Wait()
		k.etcd = nil
	}
	os.RemoveAll(k.dir)
}

func getOK(hc *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// poll calls f every 50ms until it returns nil or d has passed.
func poll(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
