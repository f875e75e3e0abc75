package testserver

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Gate is a TCP proxy on 127.0.0.1 in front of a server (an S3 server, a
// registry), passing bytes both ways untouched (so signed requests stay
// valid) until Silence: from then on it accepts connections and neither
// reads from them nor answers, and the connections it was proxying stop
// getting bytes without being closed — the server that hangs a client
// without timeouts. Resume lets new connections through again.
type Gate struct {
	Addr string // "127.0.0.1:port"

	target   string
	ln       net.Listener
	silent   atomic.Bool
	accepted atomic.Int64

	mu       sync.Mutex
	held     []net.Conn // client sides, closed when the test ends
	upstream []net.Conn // server sides of proxied connections
}

// StartGate starts a Gate to target ("127.0.0.1:port"), passing traffic
// until Silence. It is stopped, and every connection closed, when the
// test ends.
func StartGate(t testing.TB, target string) *Gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{Addr: ln.Addr().String(), target: target, ln: ln}
	go g.serve()
	t.Cleanup(func() {
		ln.Close()
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, c := range append(g.held, g.upstream...) {
			c.Close()
		}
	})
	return g
}

// StartSilent starts a Gate that is silent from the start: a TCP port
// that accepts connections and never answers.
func StartSilent(t testing.TB) *Gate {
	t.Helper()
	g := StartGate(t, "")
	g.Silence()
	return g
}

// Silence makes the gate hang every connection: new ones are accepted and
// never answered, and those it was proxying get no more bytes.
func (g *Gate) Silence() {
	g.silent.Store(true)
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.upstream {
		c.Close()
	}
	g.upstream = nil
}

// Resume lets new connections through to the target again.
func (g *Gate) Resume() { g.silent.Store(false) }

// Accepted is how many connections the gate has accepted, silent or not:
// with a client that opens one per try, how many tries reached it.
func (g *Gate) Accepted() int64 { return g.accepted.Load() }

func (g *Gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.accepted.Add(1)
		g.mu.Lock()
		g.held = append(g.held, c)
		g.mu.Unlock()
		if !g.silent.Load() {
			go g.proxy(c)
		}
	}
}

func (g *Gate) proxy(c net.Conn) {
	up, err := net.Dial("tcp", g.target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.silent.Load() { // silenced while dialling
		g.mu.Unlock()
		up.Close()
		return
	}
	g.upstream = append(g.upstream, up)
	g.mu.Unlock()
	go func() {
		io.Copy(up, c)
		up.Close()
	}()
	io.Copy(c, up)
	if !g.silent.Load() {
		c.Close() // the server closed it; silenced, the client is left hanging
	}
}
