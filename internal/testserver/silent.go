package testserver

import (
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// SilentRegistry is go-containerregistry's in-process registry on a real
// 127.0.0.1 listener until Silence is called; from then on it accepts
// connections and neither reads from them nor answers: the registry that
// hangs a client without timeouts.
type SilentRegistry struct {
	Host string // "127.0.0.1:port"

	silent atomic.Bool
	mu     sync.Mutex
	held   []net.Conn
}

// StartSilentRegistry starts a SilentRegistry, answering until Silence;
// it is stopped, and the connections it holds closed, when the test ends.
func StartSilentRegistry(t testing.TB) *SilentRegistry {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &SilentRegistry{Host: ln.Addr().String()}
	srv := &http.Server{Handler: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))}
	srv.SetKeepAlivesEnabled(false) // a new connection per request, which silence catches
	go srv.Serve(silencingListener{ln, s})
	t.Cleanup(func() {
		srv.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.held {
			c.Close()
		}
	})
	return s
}

// Silence makes every later connection hang: accepted, never answered.
func (s *SilentRegistry) Silence() { s.silent.Store(true) }

type silencingListener struct {
	net.Listener
	s *SilentRegistry
}

func (l silencingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.s.silent.Load() {
			return c, err
		}
		l.s.mu.Lock()
		l.s.held = append(l.s.held, c)
		l.s.mu.Unlock()
	}
}
