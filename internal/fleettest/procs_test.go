package fleettest

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/buildcache/buildcache/internal/testserver"
)

// proc is a buildcache process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *testserver.LockedBuffer
	addr   string // serve: the address it listens on
	exited chan struct{}
}

var listening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// start runs bin with args and env; a serve waits until it listens.
// Processes still running when the test ends are killed.
func start(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &testserver.LockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s's output ends:\n%s", name, tail(p.out.String(), 25))
		}
	})
	if len(args) > 2 && args[2] == "serve" {
		deadline := time.Now().Add(time.Minute) // hang guard
		for p.addr == "" {
			if m := listening.FindStringSubmatch(p.out.String()); m != nil {
				p.addr = m[1]
				break
			}
			select {
			case <-p.exited:
				t.Fatalf("%s exited before listening:\n%s", name, p.out)
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not listen within a minute:\n%s", name, p.out)
			}
		}
	}
	return p
}

// kill sends SIGKILL: no cleanup of any kind, as a node that dies.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// wait waits for the process to end and returns its exit code.
func (p *proc) wait() int {
	<-p.exited
	return p.cmd.ProcessState.ExitCode()
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// counter is the upstream's front: a reverse proxy that counts the
// manifest requests of each tag ("app1:v1") and slows blob bodies larger
// than slowAbove down to about slowRate bytes a second, so that a pull
// of the large blob is still under way when a replica is killed.
type counter struct {
	host string

	mu    sync.Mutex
	tags  map[string]int // "name:tag" -> manifest requests by tag
	repos map[string]int // "name" -> manifest requests, by tag or digest
	all   int
}

const (
	slowAbove = 8 << 20
	slowRate  = 16 << 20
)

var tagPath = regexp.MustCompile(`^/v2/(.+)/manifests/([A-Za-z0-9_][A-Za-z0-9_.-]*)$`)

func startCounter(t *testing.T, target string) *counter {
	c := &counter{tags: map[string]int{}, repos: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.ContentLength > slowAbove && strings.Contains(resp.Request.URL.Path, "/blobs/") {
			resp.Body = &slowBody{ReadCloser: resp.Body}
		}
		return nil
	}
	srv := newLoopbackServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.all++
		if m := tagPath.FindStringSubmatch(r.URL.Path); m != nil {
			c.tags[m[1]+":"+m[2]]++
		}
		if name, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/"); ok {
			c.repos[name]++
		}
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	c.host = srv
	return c
}

// manifestRequests returns the manifest requests by tag and by
// repository so far, and resets them.
func (c *counter) manifestRequests() (byTag, byRepo map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byTag, byRepo = c.tags, c.repos
	c.tags, c.repos = map[string]int{}, map[string]int{}
	return byTag, byRepo
}

type slowBody struct{ io.ReadCloser }

func (b *slowBody) Read(p []byte) (int, error) {
	const chunk = 256 << 10
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := b.ReadCloser.Read(p)
	time.Sleep(time.Duration(n) * time.Second / slowRate) // throttling, not synchronisation
	return n, err
}
