package k8sclient_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

func waitWatching(t *testing.T, c *k8sclient.Client, gvr schema.GroupVersionResource) {
	t.Helper()
	waitFor(t, "the watch to open", func() bool { return c.Stats()[gvr].Watching })
}

// waitEvents waits until the watch of gvr has seen n events in all.
func waitEvents(t *testing.T, c *k8sclient.Client, gvr schema.GroupVersionResource, n uint64) {
	t.Helper()
	waitFor(t, "the watch to see the change", func() bool { return c.Stats()[gvr].WatchEvents >= n })
}

// With WithWatch, a change made behind the client's back is seen as soon
// as the watch reports it, long before the TTL (an hour here).
func TestWatchInvalidates(t *testing.T) {
	e := newEnv(t)
	e.job(t, "a", "x", map[string]string{"v": "1"})
	e.job(t, "b", "y", nil)
	c := e.client(t, k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(jobs))
	waitWatching(t, c, jobs)
	ctx := t.Context()
	e.srv.ResetCounts()

	read := func() (v string, inA, inB int, laterExists bool) {
		t.Helper()
		j, err := c.Get(ctx, jobs, "a", "x")
		if err == nil {
			v = label(j, "v")
		} else if !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		la, err := c.List(ctx, jobs, "a", metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		lb, err := c.List(ctx, jobs, "b", metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		laterExists, err = c.Exists(ctx, jobs, "a", "later")
		if err != nil {
			t.Fatal(err)
		}
		return v, len(la.Items), len(lb.Items), laterExists
	}
	if v, inA, inB, later := read(); v != "1" || inA != 1 || inB != 1 || later {
		t.Fatalf("first read: v=%s, %d in a, %d in b, later exists %v", v, inA, inB, later)
	}

	e.setLabel(t, jobs, "a", "x", "v", "2")
	waitEvents(t, c, jobs, 1)
	if v, _, _, _ := read(); v != "2" {
		t.Fatalf("after a change seen by the watch: v=%s, want 2", v)
	}
	e.job(t, "a", "later", nil)
	waitEvents(t, c, jobs, 2)
	if _, inA, _, later := read(); inA != 2 || !later {
		t.Fatalf("after a create seen by the watch: %d in a, later exists %v", inA, later)
	}
	e.srv.Delete(jobs, "a", "x")
	waitEvents(t, c, jobs, 3)
	if v, inA, _, _ := read(); v != "" || inA != 1 {
		t.Fatalf("after a delete seen by the watch: v=%q, %d in a", v, inA)
	}
	// GETs: x and later at first, x after each of its two changes, later
	// after its creation. LISTs: a and b at first, a after each change;
	// b's never again.
	e.wantRequests(t, k8stest.VerbGet, "jobs", 5)
	e.wantRequests(t, k8stest.VerbList, "jobs", 5)

	t.Run("a read in flight when the change is seen is not kept", func(t *testing.T) {
		e.job(t, "a", "z", map[string]string{"v": "1"})
		waitEvents(t, c, jobs, 4)
		release := make(chan struct{})
		defer e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbGet, Name: "z", HoldAnswer: release, Times: 1})()
		old := goRead(func() (string, error) {
			j, err := c.Get(ctx, jobs, "a", "z")
			if err != nil {
				return "", err
			}
			return label(j, "v"), nil
		})
		waitFor(t, "the Get to reach the server", func() bool { return e.srv.Count(k8stest.VerbGet, "jobs") == 6 })
		e.setLabel(t, jobs, "a", "z", "v", "2")
		waitEvents(t, c, jobs, 5)
		close(release)
		if r := <-old; r.val != "1" || r.err != nil {
			t.Fatalf("held Get = v=%s, %v", r.val, r.err)
		}
		j, err := c.Get(ctx, jobs, "a", "z")
		if err != nil || label(j, "v") != "2" {
			t.Fatalf("Get after the change = %v, %v; want v=2", j, err)
		}
	})
}

// A watch that drops resumes where it was, so changes made meanwhile are
// still seen; a watch the server refuses is retried with backoff; and a
// watch that cannot resume (410 Gone) empties the cache and starts over.
// Meanwhile the TTL bounds staleness.
func TestWatchRecovers(t *testing.T) {
	e := newEnv(t)
	e.job(t, "a", "x", map[string]string{"v": "1"})
	c := e.client(t, k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(jobs),
		k8sclient.WithWatchBackoff(time.Millisecond, 4*time.Millisecond))
	waitWatching(t, c, jobs)
	ctx := t.Context()
	v := func() string {
		t.Helper()
		j, err := c.Get(ctx, jobs, "a", "x")
		if err != nil {
			t.Fatal(err)
		}
		return label(j, "v")
	}
	if got := v(); got != "1" {
		t.Fatalf("v=%s", got)
	}

	// The server drops the watch, and the client's next watch request
	// waits at the server while x changes.
	watches := e.srv.Count(k8stest.VerbWatch, "jobs")
	release := make(chan struct{})
	remove := e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbWatch, Hold: release})
	e.srv.CloseWatches()
	waitFor(t, "the watch to be retried", func() bool { return e.srv.Count(k8stest.VerbWatch, "jobs") == watches+1 })
	e.setLabel(t, jobs, "a", "x", "v", "2")
	if got := v(); got != "1" {
		t.Fatalf("without a watch, v=%s; want the cached 1 (the TTL bounds staleness)", got)
	}
	close(release)
	remove()
	// The change made while no watch was open arrives through the resumed
	// watch: the cached entry is good for an hour, so nothing else can
	// change what Get returns. (Waiting for a count of events instead
	// raced with events the resumed watch delivers twice.)
	waitFor(t, "the resumed watch to deliver v=2", func() bool { return v() == "2" })
	e.wantRequests(t, k8stest.VerbList, "jobs", 1) // resumed: no new List, cache kept

	// The server fails watches three times: retried with backoff.
	restarts := c.Stats()[jobs].WatchRestarts
	remove = e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbWatch, Code: http.StatusInternalServerError, Times: 3})
	defer remove()
	e.srv.CloseWatches()
	waitFor(t, "three failed watches and a good one", func() bool {
		s := c.Stats()[jobs]
		return s.Watching && s.WatchRestarts >= restarts+4
	})
	e.setLabel(t, jobs, "a", "x", "v", "3")
	waitFor(t, "the watch that came back to deliver v=3", func() bool { return v() == "3" })
	e.wantRequests(t, k8stest.VerbList, "jobs", 1) // resumed again: the cache kept

	// The server forgets old events while the watch is away: it cannot
	// resume (410 Gone), so the cache is emptied and the watch starts
	// from now.
	release = make(chan struct{})
	remove = e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbWatch, Hold: release, Times: 1})
	watches = e.srv.Count(k8stest.VerbWatch, "jobs")
	e.srv.CloseWatches()
	waitFor(t, "the watch to be retried", func() bool { return e.srv.Count(k8stest.VerbWatch, "jobs") == watches+1 })
	e.setLabel(t, jobs, "a", "x", "v", "4")
	e.srv.Compact()
	close(release)
	remove()
	waitFor(t, "a List to restart the watch from", func() bool { return e.srv.Count(k8stest.VerbList, "jobs") == 2 })
	waitWatching(t, c, jobs)
	if got := v(); got != "4" {
		t.Fatalf("after the watch restarted, v=%s; want 4", got)
	}
}

// Without WithWatch the client needs only get and list; with it but
// without the watch verb, reads still work and the TTL bounds staleness.
func TestRBACGetAndListOnly(t *testing.T) {
	e := newEnv(t)
	e.job(t, "a", "x", nil)
	e.srv.Allow(k8stest.VerbGet, k8stest.VerbList)
	ctx := t.Context()

	c := e.client(t)
	if _, err := c.Get(ctx, jobs, "a", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(ctx, jobs, "a", metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.JobExists(ctx, "a", "x"); err != nil || !ok {
		t.Fatal(ok, err)
	}
	e.wantRequests(t, k8stest.VerbWatch, "", 0)
	if _, err := c.Create(ctx, jobs, "a", k8stest.NewJob("a", "y", nil), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("Create without the create verb: %v; want 403 passed through", err)
	}

	w := e.client(t, k8sclient.WithTTL(time.Minute), k8sclient.WithWatch(jobs),
		k8sclient.WithWatchBackoff(time.Millisecond, 2*time.Millisecond))
	waitFor(t, "the watch to be refused twice", func() bool { return w.Stats()[jobs].WatchRestarts >= 2 })
	if _, err := w.Get(ctx, jobs, "a", "x"); err != nil {
		t.Fatal(err)
	}
	e.setLabel(t, jobs, "a", "x", "v", "2")
	e.clock.Advance(time.Minute)
	j, err := w.Get(ctx, jobs, "a", "x")
	if err != nil || label(j, "v") != "2" {
		t.Fatalf("Get after the TTL without a watch = %v, %v; want v=2", j, err)
	}
	if s := w.Stats()[jobs]; s.Watching || s.WatchEvents != 0 {
		t.Errorf("Stats = %+v; want no watch open and no events", s)
	}
}

// While nothing answers at the server's address the watch tries again
// every probe period instead of backing off (here towards an hour), and
// it is back, with what changed meanwhile, once the server is.
func TestWatchProbesWhileServerDown(t *testing.T) {
	e := newEnv(t)
	e.job(t, "a", "x", map[string]string{"v": "1"})
	p := newFlakyProxy(t, e.srv.URL)
	dyn, err := dynamic.NewForConfig(&rest.Config{Host: p.url, QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := k8sclient.New(dyn, k8sclient.WithClock(e.clock.Now), k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(jobs),
		k8sclient.WithWatchBackoff(10*time.Millisecond, time.Hour), k8sclient.WithWatchProbe(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	waitWatching(t, c, jobs)
	ctx := t.Context()
	v := func() string {
		j, err := c.Get(ctx, jobs, "a", "x")
		if err != nil {
			return err.Error()
		}
		return label(j, "v")
	}
	if got := v(); got != "1" {
		t.Fatalf("v=%s", got)
	}

	restarts := c.Stats()[jobs].WatchRestarts
	p.down()
	waitFor(t, "20 tries while nothing answers (with backoff they would take years)", func() bool {
		return c.Stats()[jobs].WatchRestarts >= restarts+20
	})
	if err := c.Stats()[jobs].WatchError; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("WatchError = %v, want a refused connection", err)
	}
	e.setLabel(t, jobs, "a", "x", "v", "2")
	if got := v(); got != "1" {
		t.Fatalf("while the server is away v=%s, want the cached 1", got)
	}
	p.up()
	waitFor(t, "the change made during the outage", func() bool { return v() == "2" })
	waitWatching(t, c, jobs)
}

// A request through the client that the server answers ends a watch's
// backoff at once: the server is back. A hit asks the server nothing.
func TestWatchWokenByAnsweredRequest(t *testing.T) {
	e := newEnv(t)
	e.job(t, "a", "x", nil)
	c := e.client(t, k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(jobs), k8sclient.WithWatchBackoff(time.Hour, time.Hour))
	waitWatching(t, c, jobs)
	ctx := t.Context()
	if _, err := c.Get(ctx, jobs, "a", "x"); err != nil {
		t.Fatal(err)
	}
	watches := e.srv.Count(k8stest.VerbWatch, "jobs")
	e.srv.CloseWatches() // the watch ends and waits its backoff: an hour
	waitFor(t, "the watch to end", func() bool { return !c.Stats()[jobs].Watching })
	if _, err := c.Get(ctx, jobs, "a", "x"); err != nil { // a hit
		t.Fatal(err)
	}
	if n := e.srv.Count(k8stest.VerbWatch, "jobs"); n != watches {
		t.Fatalf("%d watch requests after a hit, want none", n-watches)
	}
	if ok, err := c.Exists(ctx, jobs, "a", "nope"); ok || err != nil { // a miss, answered 404
		t.Fatal(ok, err)
	}
	waitWatching(t, c, jobs)
	if n := e.srv.Count(k8stest.VerbWatch, "jobs"); n != watches+1 {
		t.Fatalf("%d watch requests after the answered miss, want 1", n-watches)
	}
}

// A server that answers reads but fails every watch is not asked for a
// watch on every read: an answered request ends a backoff once, and then
// the backoff is waited out until a watch opens.
func TestWatchWokenOnce(t *testing.T) {
	e := newEnv(t)
	e.job(t, "a", "x", nil)
	c := e.client(t, k8sclient.WithTTL(time.Hour), k8sclient.WithWatch(jobs), k8sclient.WithWatchBackoff(time.Hour, time.Hour))
	waitWatching(t, c, jobs)
	ctx := t.Context()
	exists := func(name string) {
		t.Helper()
		if ok, err := c.Exists(ctx, jobs, "a", name); ok || err != nil { // a miss, answered 404
			t.Fatal(ok, err)
		}
	}
	watches, restarts := e.srv.Count(k8stest.VerbWatch, "jobs"), c.Stats()[jobs].WatchRestarts
	defer e.srv.Inject(k8stest.Fault{Verb: k8stest.VerbWatch, Code: http.StatusInternalServerError})()
	e.srv.CloseWatches()
	waitFor(t, "the watch to end", func() bool { return c.Stats()[jobs].WatchRestarts == restarts+1 })
	exists("nope")
	waitFor(t, "the woken watch to fail", func() bool { return c.Stats()[jobs].WatchRestarts == restarts+2 })
	for i := range 20 {
		exists(fmt.Sprint("nope-", i))
	}
	if n := e.srv.Count(k8stest.VerbWatch, "jobs"); n != watches+1 {
		t.Fatalf("%d watch requests after 21 answered misses, want 1", n-watches)
	}
}

// flakyProxy forwards TCP connections to an HTTP server until down,
// which closes its listener and every connection, so that connecting is
// refused; up listens on the same port again.
type flakyProxy struct {
	t      *testing.T
	url    string
	addr   string
	target string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
}

func newFlakyProxy(t *testing.T, target string) *flakyProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{t: t, target: u.Host, addr: "127.0.0.1:0", conns: map[net.Conn]bool{}}
	p.up()
	p.url = "http://" + p.addr
	t.Cleanup(p.down)
	return p
}

func (p *flakyProxy) up() {
	p.t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.l, p.addr = l, l.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns[in], p.conns[out] = true, true
			p.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
}

func (p *flakyProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}
