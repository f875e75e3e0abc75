package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// node-config writes a hosts.toml per registry once the mirror is ready,
// says what it did, and --remove puts back what was there.
func TestNodeConfig(t *testing.T) {
	up := newCountingUpstream(t)
	s := startServe(t, "--upstream", "test.example=http://"+up.host)
	dir := t.TempDir()
	theirs := filepath.Join(dir, "ghcr.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(theirs), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, theirs, "server = \"https://ghcr.io\"\n")
	mirror := "http://" + s.addr

	doc := cliJSON(t, 0, "node-config", "--mirror", mirror, "--hosts-dir", dir,
		"--registry", "docker.io", "--registry", "ghcr.io=https://ghcr.io")
	want := map[string]any{"mirror": mirror, "hosts_dir": dir, "results": []any{
		map[string]any{"registry": "docker.io", "path": filepath.Join(dir, "docker.io", "hosts.toml"), "action": "written"},
		map[string]any{"registry": "ghcr.io", "path": theirs, "action": "replaced"},
	}}
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("node-config --json (-want +got):\n%s", diff)
	}
	b, err := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "server = \"https://registry-1.docker.io\"\n\n[host.\""+mirror+"\"]\n  capabilities = [\"pull\", \"resolve\"]\n") {
		t.Errorf("docker.io's hosts.toml:\n%s", b)
	}

	stdout, stderr, code := cli(t, "node-config", "--remove", "--hosts-dir", dir, "--registry", "docker.io", "--registry", "ghcr.io")
	if code != 0 {
		t.Fatalf("--remove: exit %d\n%s", code, stderr)
	}
	if want := "docker.io\tremoved\t" + filepath.Join(dir, "docker.io", "hosts.toml") + "\nghcr.io\trestored\t" + theirs + "\n"; stdout != want {
		t.Errorf("--remove printed %q, want %q", stdout, want)
	}
	if b, _ := os.ReadFile(theirs); string(b) != "server = \"https://ghcr.io\"\n" {
		t.Errorf("ghcr.io's own hosts.toml after --remove: %q", b)
	}
}

// A mirror that does not answer /readyz gets no file.
func TestNodeConfigWaitsForMirror(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	_, stderr, code := cli(t, "node-config", "--mirror", "http://"+addr, "--hosts-dir", dir, "--registry", "docker.io", "--wait", "300ms")
	if code != exitFailure || !strings.Contains(stderr, "not ready after") || !strings.Contains(stderr, "connection refused") || !strings.Contains(stderr, "nothing written") {
		t.Errorf("exit %d, stderr %q: want 1 and why", code, stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("%d entries written for a mirror that is not there", len(entries))
	}
}

// --until-signal writes, stays, and removes what it wrote when its
// context ends (SIGTERM).
func TestNodeConfigUntilSignal(t *testing.T) {
	up := newCountingUpstream(t)
	s := startServe(t, "--upstream", "test.example=http://"+up.host)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := newLogBuffer()
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"node-config", "--until-signal", "--mirror", "http://" + s.addr, "--hosts-dir", dir, "--registry", "docker.io"}, out, io.Discard)
	}()
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	out.await(t, regexp.MustCompile(`docker.io\t(written)\t`), exited)
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
	case <-time.After(serveWait):
		t.Fatal("node-config --until-signal did not end with its context")
	}
	if !strings.Contains(out.String(), "docker.io\tremoved\t") {
		t.Errorf("output lacks the removal:\n%s", out)
	}
	if _, err := os.Lstat(filepath.Join(dir, "docker.io")); !os.IsNotExist(err) {
		t.Errorf("the registry directory is left (%v)", err)
	}
}

func TestNodeConfigBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no registry", nil, "at least one --registry"},
		{"bad registry", []string{"--registry", "docker.io=ftp://x"}, "want http or https"},
		{"registry path", []string{"--registry", "../etc=https://x.example"}, "--registry"},
		{"mirror path", []string{"--registry", "docker.io", "--mirror", "http://127.0.0.1:5000/v2"}, "no path"},
		{"mirror scheme", []string{"--registry", "docker.io", "--mirror", "127.0.0.1:5000"}, "http:// or https://"},
		{"no wait", []string{"--registry", "docker.io", "--wait", "0s"}, "--wait must be positive"},
		{"remove and stay", []string{"--registry", "docker.io", "--remove", "--until-signal"}, "do not go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, stderr, code := cli(t, append([]string{"node-config", "--hosts-dir", dir}, tc.args...)...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tc.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%d entries written", len(entries))
			}
		})
	}
}
