// Package testserver starts real servers for integration tests: a Docker
// distribution registry (StartRegistry: Debian's docker-registry, or
// distribution's registry v3), an S3-compatible server (StartS3:
// versitygw with POSIX storage), buildkitd with its OCI worker
// (StartBuildkitd), containerd (StartContainerd; StartContainerdCRI
// with crictl, the kubelet's pull path), a Docker daemon with a registry
// mirror (StartDockerd) and a kube-apiserver with its own etcd
// (SharedKube). Each listens on 127.0.0.1 (buildkitd on a unix
// socket), keeps its state in a temp dir and is stopped when the test
// ends. A Registry or S3Server can be stopped and started again on the
// same address and storage, to test what a client does while it is down.
//
// When a server's binary is missing, tests skip with a message saying how
// to install it; under CI (CI set) they fail instead, because there the
// binary must exist (scripts/test installs or builds each of them).
package testserver

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Registry is a running registry server.
type Registry struct {
	Host string // "127.0.0.1:port", usable in image references
	cmd  *exec.Cmd
	log  *bytes.Buffer
	dir  string
	cfg  string
	bin  string
}

// registryBinary finds a registry server: $BUILDCACHE_REGISTRY_BIN,
// docker-registry (Debian), or registry (distribution v3).
func registryBinary() (string, error) {
	if p := os.Getenv("BUILDCACHE_REGISTRY_BIN"); p != "" {
		return p, nil
	}
	for _, name := range []string{"docker-registry", "registry"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no registry server found: apt-get install docker-registry, or go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2, or set BUILDCACHE_REGISTRY_BIN")
}

// unavailable skips the test, or fails it under CI where the server must
// be there.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI: %v", err)
	}
	t.Skipf("skipping: %v (scripts/test installs it)", err)
}

// StartRegistry starts a registry with filesystem storage in a temp dir,
// without auth, on a free port of 127.0.0.1, and waits until it answers.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistry(t, "  delete:\n    enabled: true\n", "")
}

// startRegistry starts docker-registry with storage in a temp dir on a
// free port of 127.0.0.1: storageExtra goes under storage:, top at the top
// level of its config (proxy: for StartProxyRegistry).
func startRegistry(t testing.TB, storageExtra, top string) *Registry {
	t.Helper()
	bin, err := registryBinary()
	if err != nil {
		unavailable(t, err)
	}
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &Registry{Host: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, bin: bin, cfg: filepath.Join(dir, "config.yml")}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
%shttp:
  addr: %s
%s`, filepath.Join(dir, "data"), storageExtra, r.Host, top)
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Start(t)
	t.Cleanup(func() { r.Stop() })
	return r
}

// Start (re)starts the server on the same address and storage.
func (r *Registry) Start(t testing.TB) {
	t.Helper()
	r.log = &bytes.Buffer{}
	r.cmd = exec.Command(r.bin, "serve", r.cfg)
	r.cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", r.bin, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			r.Stop()
			t.Fatalf("registry on %s did not become ready: %v\n%s", r.Host, err, r.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the server process's id, for a benchmark that reads its CPU
// time in /proc; 0 when it is stopped.
func (r *Registry) PID() int {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Stop kills the server; Start brings it back with the same content.
func (r *Registry) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
