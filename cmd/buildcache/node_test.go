package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
)

// The tests below put `buildcache serve` in front of a real
// docker-registry, as a node's mirror, and pull through it with the real
// clients of a node: ctr with the hosts.toml files `buildcache
// node-config` wrote, crictl through containerd's CRI plugin (what the
// kubelet calls; there is no kubelet here), and the Docker daemon with
// --registry-mirror, pulling and building as StreamPark does. Each also
// pulls with the mirror stopped and logs how long the fallback to the
// registry took.

// nodeWait bounds each client command of these tests.
const nodeWait = 3 * time.Minute

// upstreamProxy is a reverse proxy in front of a registry that counts
// what it is asked, by who asks: the mirror (User-Agent buildcache) or a
// runtime falling back to the registry itself.
type upstreamProxy struct {
	srv *httptest.Server
	mu  sync.Mutex
	n   map[string]int // "mirror HEAD manifests", "containerd GET blobs", …
}

func newUpstreamProxy(t *testing.T, registryHost string) *upstreamProxy {
	t.Helper()
	target, err := url.Parse("http://" + registryHost)
	if err != nil {
		t.Fatal(err)
	}
	p := &upstreamProxy{n: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if kind := apiKind(r.Method, r.URL.Path); kind != "" {
			who := "runtime"
			if strings.HasPrefix(r.UserAgent(), "buildcache") { // regclient's
				who = "mirror"
			}
			p.mu.Lock()
			p.n[who+" "+kind]++
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *upstreamProxy) host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// counts returns what was asked since the last call, and resets.
func (p *upstreamProxy) counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.n
	p.n = map[string]int{}
	return n
}

// apiKind is "<method> manifests" or "<method> blobs" for those
// distribution API requests, else "".
func apiKind(method, path string) string {
	switch {
	case strings.HasPrefix(path, "/v2/") && strings.Contains(path, "/manifests/"):
		return method + " manifests"
	case strings.HasPrefix(path, "/v2/") && strings.Contains(path, "/blobs/"):
		return method + " blobs"
	}
	return ""
}

var accessRe = regexp.MustCompile(`msg=request method=(\S+) path=(\S+)(?: ns=(\S+))?`)

// served counts the mirror's access log records from offset on, as
// apiKind, with " ns" added for those that carried containerd's ?ns=.
func (s *server) served(offset int) map[string]int {
	n := map[string]int{}
	log := s.stderr.String()
	for _, m := range accessRe.FindAllStringSubmatch(log[min(offset, len(log)):], -1) {
		if kind := apiKind(m[1], m[2]); kind != "" {
			if m[3] != "" {
				kind += " ns"
			}
			n[kind]++
		}
	}
	return n
}

// nodeSetup is a registry holding base:v1 (both platforms), a counting
// proxy in front of it, and the node's mirror in front of that.
type nodeSetup struct {
	reg   *testserver.Registry
	up    *upstreamProxy
	ref   string // up.host()/base:v1: the registry as runtimes name it
	hosts string // containerd's hosts dir, written by node-config
	s     *server
}

func newNodeSetup(t *testing.T, repo string) *nodeSetup {
	t.Helper()
	n := &nodeSetup{reg: testserver.StartRegistry(t)}
	n.up = newUpstreamProxy(t, n.reg.Host)
	ti := testimage.ForTest(t)
	ti.Push(n.reg.Host+"/"+repo+":v1", ti.Index("linux/amd64", "linux/arm64"))
	n.ref = n.up.host() + "/" + repo + ":v1"
	n.s = startServe(t, "--upstream", n.up.host()+"=http://"+n.up.host())
	n.hosts = filepath.Join(t.TempDir(), "certs.d")
	return n
}

// nodeConfig runs `buildcache node-config` for the registry, with the
// mirror's address, into n.hosts.
func (n *nodeSetup) nodeConfig(t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{"node-config", "--mirror", "http://" + n.s.addr, "--hosts-dir", n.hosts,
		"--registry", n.up.host() + "=http://" + n.up.host()}, extra...)
	if stdout, stderr, code := cli(t, args...); code != 0 {
		t.Fatalf("node-config %v: exit %d\n%s%s", extra, code, stdout, stderr)
	}
}

// checkThroughMirror asserts a pull went through the mirror, with ?ns=,
// and never to the registry directly.
func (n *nodeSetup) checkThroughMirror(t *testing.T, what string, offset int) {
	t.Helper()
	served := n.s.served(offset)
	up := n.up.counts()
	t.Logf("%s: the mirror served %v; the registry was asked %v", what, served, up)
	if served["GET manifests ns"]+served["HEAD manifests ns"] == 0 || served["GET blobs ns"] < 2 {
		t.Errorf("%s: the mirror served %v, want the image's manifests and blobs, with ?ns=", what, served)
	}
	for k, v := range up {
		if strings.HasPrefix(k, "runtime ") && v > 0 {
			t.Errorf("%s: the runtime went to the registry itself: %v", what, up)
			break
		}
	}
}

// checkFellBack asserts a pull with the mirror stopped got everything
// from the registry itself.
func (n *nodeSetup) checkFellBack(t *testing.T, what string, took time.Duration) {
	t.Helper()
	up := n.up.counts()
	t.Logf("%s: %v; the registry was asked %v", what, took.Round(time.Millisecond), up)
	if up["runtime GET blobs"] < 2 || up["runtime GET manifests"]+up["runtime HEAD manifests"] == 0 {
		t.Errorf("%s: the registry was asked %v, want the runtime's own manifest and blob requests", what, up)
	}
}

// ctr pull with the hosts.toml node-config wrote goes through the mirror;
// with the mirror stopped, to the registry.
func TestNodeContainerdCtr(t *testing.T) {
	n := newNodeSetup(t, "base")
	n.nodeConfig(t)
	pull := func(what string, hosts ...string) time.Duration {
		t.Helper()
		c := testserver.StartContainerd(t)
		defer c.Stop()
		ctx, cancel := context.WithTimeout(t.Context(), nodeWait)
		defer cancel()
		args := append([]string{"images", "pull", "--platform", "linux/amd64", "--snapshotter", "native"}, hosts...)
		start := time.Now()
		if _, err := c.Ctr(ctx, append(args, n.ref)...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		took := time.Since(start)
		if out, err := c.Ctr(ctx, "images", "ls", "--quiet"); err != nil || !strings.Contains(out, n.ref) {
			t.Fatalf("%s: ctr images ls lacks %s (%v):\n%s", what, n.ref, err, out)
		}
		return took
	}

	offset := len(n.s.stderr.String())
	took := pull("cold pull through the mirror", "--hosts-dir", n.hosts)
	n.checkThroughMirror(t, "ctr, cold", offset)
	t.Logf("ctr, cold through the mirror: %v", took.Round(time.Millisecond))

	// The same pull straight from the registry, for the time a pull takes
	// without any mirror.
	direct := pull("direct pull", "--plain-http")
	n.up.counts()
	n.s.shutdown(t)
	took = pull("pull with the mirror stopped", "--hosts-dir", n.hosts)
	n.checkFellBack(t, "ctr, mirror stopped", took)
	t.Logf("ctr fallback: %v with the mirror stopped, %v straight from the registry", took.Round(time.Millisecond), direct.Round(time.Millisecond))

	if stdout, stderr, code := cli(t, "node-config", "--remove", "--hosts-dir", n.hosts, "--registry", n.up.host()); code != 0 || !strings.Contains(stdout, "\tremoved\t") {
		t.Errorf("node-config --remove: exit %d\n%s%s", code, stdout, stderr)
	}
	if entries, err := os.ReadDir(n.hosts); err != nil || len(entries) != 0 {
		t.Errorf("the hosts dir after --remove: %v, %v", entries, err)
	}
}

// crictl pull, the kubelet's path into containerd (its CRI plugin with
// config_path set to the hosts dir node-config wrote), goes through the
// mirror; with the mirror stopped, to the registry.
func TestNodeContainerdCRI(t *testing.T) {
	n := newNodeSetup(t, "base")
	n.nodeConfig(t)
	c := testserver.StartContainerdCRI(t, n.hosts)
	crictl := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), nodeWait)
		defer cancel()
		out, err := c.Crictl(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	offset := len(n.s.stderr.String())
	start := time.Now()
	crictl("pull", n.ref)
	t.Logf("crictl, cold through the mirror: %v", time.Since(start).Round(time.Millisecond))
	n.checkThroughMirror(t, "crictl, cold", offset)
	if out := crictl("images"); !strings.Contains(out, n.up.host()+"/base") {
		t.Fatalf("crictl images lacks the image:\n%s", out)
	}

	crictl("rmi", n.ref)
	n.s.shutdown(t)
	start = time.Now()
	crictl("pull", n.ref)
	n.checkFellBack(t, "crictl, mirror stopped", time.Since(start))
	if out := crictl("images"); !strings.Contains(out, n.up.host()+"/base") {
		t.Fatalf("crictl images lacks the image pulled with the mirror stopped:\n%s", out)
	}
}

// The Docker daemon with --registry-mirror (StreamPark's build hosts)
// pulls and builds FROM a Docker Hub image through the mirror: cold, warm
// (one HEAD upstream) and with the upstream stopped; then with the mirror
// stopped it goes to Docker Hub itself. registry-mirrors applies to
// Docker Hub names only, so the image is library/… and the mirror's
// default upstream, the registry here, stands in for Docker Hub.
func TestNodeDocker(t *testing.T) {
	reg := testserver.StartRegistry(t)
	up := newUpstreamProxy(t, reg.Host)
	ti := testimage.ForTest(t)
	ti.Push(reg.Host+"/library/buildcache-node-test:v1", ti.Index("linux/amd64", "linux/arm64"))
	s := startServe(t, "--upstream", "docker.io=http://"+up.host())
	d := testserver.StartDockerd(t, "http://"+s.addr)
	const image = "buildcache-node-test:v1" // docker.io/library/…
	docker := func(env []string, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), nodeWait)
		defer cancel()
		return d.Docker(ctx, env, args...)
	}
	must := func(env []string, args ...string) string {
		t.Helper()
		out, err := docker(env, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The build context: FROM the image, a RUN step in it, a file copied.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Dockerfile"), "FROM "+image+"\nRUN [\"/prog\", \"arch\", \"/out/arch\"]\nCOPY job.jar /opt/job.jar\n")
	writeFile(t, filepath.Join(dir, "job.jar"), "not really a jar")

	offset := len(s.stderr.String())
	must(nil, "pull", image)
	served := s.served(offset)
	t.Logf("docker pull, cold: the mirror served %v; the registry was asked %v", served, up.counts())
	if served["GET manifests"] == 0 || served["GET blobs"] < 2 {
		t.Fatalf("docker pull, cold: the mirror served %v, want the manifests and blobs", served)
	}

	for _, builder := range []struct{ name, env string }{{"legacy", "DOCKER_BUILDKIT=0"}, {"buildkit", "DOCKER_BUILDKIT=1"}} {
		t.Run(builder.name, func(t *testing.T) {
			env := []string{builder.env}
			build := func(what string) {
				t.Helper()
				// A fresh build host: neither the base image nor a build
				// cache, so the base comes through the mirror.
				docker(nil, "rmi", "-f", image, "app:legacy", "app:buildkit")
				must(nil, "builder", "prune", "-af")
				offset := len(s.stderr.String())
				if _, err := docker(env, "build", "--pull", "--network", "none", "-t", "app:"+builder.name, dir); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				served := s.served(offset)
				t.Logf("%s: the mirror served %v", what, served)
				if served["GET manifests"]+served["GET manifests ns"] == 0 || served["GET blobs"]+served["GET blobs ns"] < 2 {
					t.Errorf("%s: the mirror served %v, want the base image's manifests and blobs", what, served)
				}
			}
			up.counts()
			build("warm build")
			if n := up.counts(); n["mirror HEAD manifests"] != 1 || len(n) != 1 {
				t.Errorf("warm build: the registry was asked %v, want one HEAD of the tag", n)
			}
		})
	}
	t.Run("upstream stopped", func(t *testing.T) {
		up.srv.Close()
		for _, builder := range []string{"DOCKER_BUILDKIT=0", "DOCKER_BUILDKIT=1"} {
			docker(nil, "rmi", "-f", image, "app:legacy", "app:buildkit", "app:stale")
			must(nil, "builder", "prune", "-af")
			offset := len(s.stderr.String())
			start := time.Now()
			if out, err := docker([]string{builder}, "build", "--pull", "--network", "none", "-t", "app:stale", dir); err != nil {
				t.Fatalf("%s build with the upstream stopped: %v\n%s", builder, err, out)
			}
			served := s.served(offset)
			t.Logf("%s build with the upstream stopped: %v; the mirror served %v", builder, time.Since(start).Round(time.Millisecond), served)
			if served["GET blobs"]+served["GET blobs ns"] < 2 {
				t.Errorf("%s build with the upstream stopped: the mirror served %v, want the base image's blobs", builder, served)
			}
		}
		docker(nil, "rmi", "-f", image)
		must(nil, "pull", image)
	})

	// The mirror stopped: the daemon goes on to Docker Hub itself (which
	// has no such image, or is out of reach here).
	s.shutdown(t)
	docker(nil, "rmi", "-f", image)
	start := time.Now()
	out, err := docker(nil, "pull", image)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("docker pull with the mirror stopped succeeded:\n%s", out)
	}
	// logrus quotes the message: Get \"http://…/v2/\": dial tcp …
	refused := regexp.MustCompile(`Attempting next endpoint for pull after error: Get \\?"http://` + regexp.QuoteMeta(s.addr) + `/v2/[^"\\]*\\?": dial tcp \S+: connect: connection refused`)
	if !refused.MatchString(d.Log()) {
		t.Errorf("the daemon did not move on from the stopped mirror:\n%s", d.Log())
	}
	t.Logf("docker pull with the mirror stopped: moved on to Docker Hub and failed there in %v: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
}
