package regclient

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Timeouts bound how long a request waits for a registry that has stopped
// answering. A zero field keeps its default.
//
// Connect and TLSHandshake are settings of the default transport; a
// transport given with WithTransport keeps its own. ResponseHeader and
// Stall are enforced by the client itself, through each request's
// context, so they hold with any transport that honours a request's
// context (http.Transport does).
type Timeouts struct {
	// Connect bounds opening the TCP connection (default 30s).
	Connect time.Duration
	// TLSHandshake bounds the TLS handshake (default 10s).
	TLSHandshake time.Duration
	// ResponseHeader bounds the wait for an answer's status and headers,
	// counted from when the request (and its body) has been handed over,
	// so a connection that is slow to open counts too (default 30s).
	ResponseHeader time.Duration
	// Stall bounds one wait for the next bytes of a body that stops
	// moving: a download's Read that gets nothing, or an upload the
	// registry stops taking (default 30s). Time the caller spends between
	// Reads does not count.
	Stall time.Duration
}

// defaultTimeouts are the bounds a Client keeps unless
// WithTimeouts says otherwise: Docker's and go-containerregistry's dial
// and handshake bounds, and as long for an answer or a stalled body.
func defaultTimeouts() Timeouts {
	return Timeouts{
		Connect:        30 * time.Second,
		TLSHandshake:   10 * time.Second,
		ResponseHeader: 30 * time.Second,
		Stall:          30 * time.Second,
	}
}

// WithTimeouts sets the bounds on a registry that stops answering
// (defaults: Connect 30s, TLSHandshake 10s, ResponseHeader 30s, Stall 30s;
// a zero field keeps its default). A request
// that runs into one fails with a *RemoteError whose error is a timeout
// (net.Error), counted as unreachable: it is retried like a broken
// connection, and a cached image is served Stale. A context's deadline
// ends a call whatever these say. Connect and TLSHandshake conflict with
// WithTransport, whose transport has its own.
func WithTimeouts(t Timeouts) Option {
	return func(o *options) error {
		if t.Connect < 0 || t.TLSHandshake < 0 || t.ResponseHeader < 0 || t.Stall < 0 {
			return fmt.Errorf("regclient: WithTimeouts(%+v): negative timeout", t)
		}
		o.timeouts = t.or(o.timeouts)
		o.dialTimeoutsSet = o.dialTimeoutsSet || t.Connect > 0 || t.TLSHandshake > 0
		return nil
	}
}

// or fills t's zero fields from d.
func (t Timeouts) or(d Timeouts) Timeouts {
	pick := func(a, b time.Duration) time.Duration {
		if a > 0 {
			return a
		}
		return b
	}
	return Timeouts{
		Connect:        pick(t.Connect, d.Connect),
		TLSHandshake:   pick(t.TLSHandshake, d.TLSHandshake),
		ResponseHeader: pick(t.ResponseHeader, d.ResponseHeader),
		Stall:          pick(t.Stall, d.Stall),
	}
}

// newDefaultTransport is go-containerregistry's default transport (proxy
// from the environment, HTTP/2, keep-alives) with t's dial and TLS
// handshake bounds.
func newDefaultTransport(t Timeouts) *http.Transport {
	base, ok := remote.DefaultTransport.(*http.Transport)
	if !ok {
		base = http.DefaultTransport.(*http.Transport)
	}
	tr := base.Clone()
	tr.DialContext = (&net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = t.TLSHandshake
	return tr
}
