package mirror

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The timeouts of a Server's connections. A client gets
// serverReadHeaderTimeout to send its request headers and serverReadTimeout
// for the whole request (requests are GET and HEAD: no body to wait for);
// an idle keep-alive connection is closed after serverIdleTimeout. There
// is no write timeout: a large blob to a slow client may take long, and
// the resolver's stall timeouts bound the upstream side.
const (
	serverReadHeaderTimeout = 10 * time.Second
	serverReadTimeout       = time.Minute
	serverIdleTimeout       = 2 * time.Minute
	serverMaxHeaderBytes    = 64 << 10
	// abandonWait bounds the wait for handlers still running after the
	// grace period, once their contexts are cancelled.
	abandonWait = 5 * time.Second
)

// DefaultShutdownGrace is how long a Server lets requests in progress
// finish once its context ends, unless WithShutdownGrace says otherwise.
const DefaultShutdownGrace = 30 * time.Second

// A Server runs a mirror's handler on a listener with the lifecycle a
// registry mirror needs: the timeouts above, optional TLS, a second
// listener for metrics, health probes (WithHealth) and a graceful
// shutdown. When the context given to Serve ends (SIGTERM), it turns not
// ready, serves on for the shutdown delay if any (WithShutdownDelay),
// stops accepting connections, lets the requests in progress finish for
// the grace period, then cancels their contexts and cuts their
// connections, waits (at most 5 s) for their handlers to return, and
// closes what WithCloseAfter names: the Mirror, whose Close abandons the
// downloads still in flight, so nothing half downloaded is stored, and
// whatever must outlive every request.
//
// A Server serves once.
type Server struct {
	handler  http.Handler
	o        serverOptions
	inflight tracker
	started  atomic.Bool
	closing  chan struct{} // closed by Close
	close    sync.Once
}

type serverOptions struct {
	tls     *tls.Config
	grace   time.Duration
	delay   time.Duration // WithShutdownDelay
	health  *Health
	logger  *slog.Logger
	extra   []listening // WithMetricsListener
	closers []io.Closer
}

// listening is a handler to serve on a listener.
type listening struct {
	l net.Listener
	h http.Handler
}

// ServerOption configures a Server.
type ServerOption func(*serverOptions) error

// WithTLS serves HTTPS with cfg, which must hold a certificate
// (Certificates, GetCertificate or GetConfigForClient). A MinVersion below
// TLS 1.2 is raised to it. Default: plain HTTP.
func WithTLS(cfg *tls.Config) ServerOption {
	return func(o *serverOptions) error {
		if cfg == nil || (len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil) {
			return errors.New("mirror: WithTLS: a config without a certificate")
		}
		o.tls = cfg.Clone()
		o.tls.MinVersion = max(o.tls.MinVersion, tls.VersionTLS12)
		return nil
	}
}

// WithShutdownGrace sets how long requests in progress may finish once
// Serve's context ends; 0 cancels them at once. Default:
// DefaultShutdownGrace (30 s).
func WithShutdownGrace(d time.Duration) ServerOption {
	return func(o *serverOptions) error {
		if d < 0 {
			return errors.New("mirror: WithShutdownGrace: a negative grace")
		}
		o.grace = d
		return nil
	}
}

// WithShutdownDelay keeps the server accepting and serving requests for
// d once Serve's context ends, before it closes its listeners and starts
// the grace period, while /readyz (WithHealth) answers 503: time for a
// load balancer or a Kubernetes Service, which learn of the shutdown
// through the readiness probe or the endpoint's removal, both racing the
// signal, to stop sending new requests before connections are refused.
// Close cuts it short. Default 0: the listeners close at once.
func WithShutdownDelay(d time.Duration) ServerOption {
	return func(o *serverOptions) error {
		if d < 0 {
			return errors.New("mirror: WithShutdownDelay: a negative delay")
		}
		o.delay = d
		return nil
	}
}

// WithHealth answers HealthzPath and ReadyzPath with h on every listener,
// ahead of the handlers (so without their authentication and access
// logs), and makes h not ready as soon as Serve's context ends, before
// the shutdown delay and the grace period. Default: none (those paths go
// to the handler).
func WithHealth(h *Health) ServerOption {
	return func(o *serverOptions) error {
		if h == nil {
			return errors.New("mirror: WithHealth: nil")
		}
		o.health = h
		return nil
	}
}

// WithServerLogger logs the server's lifecycle ("shutting down",
// "stopped", requests cancelled at the end of the grace) and net/http's
// own errors (TLS handshakes, for example) to logger. Access logs are the
// handler's: wrap it in AccessLog. Default: none.
func WithServerLogger(logger *slog.Logger) ServerOption {
	return func(o *serverOptions) error {
		if logger == nil {
			return errors.New("mirror: WithServerLogger: nil logger")
		}
		o.logger = logger
		return nil
	}
}

// WithMetricsListener also serves h on l, with the same timeouts and
// shutdown but never TLS nor the main handler's wrapping (authentication):
// for Prometheus's /metrics on an address of its own, h is typically an
// http.ServeMux with "GET /metrics". Serve closes l when it returns.
// Default: none.
func WithMetricsListener(l net.Listener, h http.Handler) ServerOption {
	return func(o *serverOptions) error {
		if l == nil || h == nil {
			return errors.New("mirror: WithMetricsListener: nil listener or handler")
		}
		o.extra = append(o.extra, listening{l, h})
		return nil
	}
}

// WithCloseAfter closes c once the server has shut down and the handlers
// have returned (or the bounded wait for them ended), before Serve
// returns: the Mirror, so its downloads in flight are abandoned after the
// grace period rather than left running. Several are closed in the order
// given. Default: none.
func WithCloseAfter(c io.Closer) ServerOption {
	return func(o *serverOptions) error {
		if c == nil {
			return errors.New("mirror: WithCloseAfter: nil")
		}
		o.closers = append(o.closers, c)
		return nil
	}
}

// NewServer returns a Server for h: a *Mirror, or one wrapped in
// RequireAuth and AccessLog.
func NewServer(h http.Handler, opts ...ServerOption) (*Server, error) {
	if h == nil {
		return nil, errors.New("mirror: NewServer: nil handler")
	}
	o := serverOptions{grace: DefaultShutdownGrace, logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &Server{handler: h, o: o, closing: make(chan struct{})}, nil
}

// Serve serves on l, and on the metrics listener if any, until ctx ends,
// Close is called or a listener fails; then it shuts down as the Server
// doc says and returns. It returns nil after a shutdown that ctx or Close
// asked for, else the listener's error, joined with the closers' errors.
// Handlers' contexts carry ctx's values but not its end: they end with the
// grace period.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("mirror: Server.Serve called twice")
	}
	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	all := append([]listening{{l, s.handler}}, s.o.extra...)
	servers := make([]*http.Server, len(all))
	errc := make(chan error, len(all))
	for i, ln := range all {
		h := ln.h
		if s.o.health != nil {
			h = s.o.health.Route(h)
		}
		srv := &http.Server{
			Handler:           s.inflight.wrap(h),
			ReadHeaderTimeout: serverReadHeaderTimeout,
			ReadTimeout:       serverReadTimeout,
			IdleTimeout:       serverIdleTimeout,
			MaxHeaderBytes:    serverMaxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(s.o.logger.Handler(), slog.LevelWarn),
			BaseContext:       func(net.Listener) context.Context { return handlerCtx },
		}
		servers[i] = srv
		secure := i == 0 && s.o.tls != nil
		if secure {
			srv.TLSConfig = s.o.tls
		}
		go func() {
			var err error
			if secure {
				err = srv.ServeTLS(ln.l, "", "")
			} else {
				err = srv.Serve(ln.l)
			}
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case <-s.closing:
	case serveErr = <-errc:
	}
	s.shutdown(servers, cancelHandlers)
	errs := []error{serveErr}
	for _, c := range s.o.closers {
		errs = append(errs, c.Close())
	}
	s.o.logger.Info("stopped")
	return errors.Join(errs...)
}

// Close cuts the grace period short: requests in progress are cancelled
// at once, and Serve returns once it has closed what WithCloseAfter
// names. Called before Serve, it makes Serve shut down as soon as it has
// started. It does not wait for Serve.
func (s *Server) Close() error {
	s.close.Do(func() { close(s.closing) })
	return nil
}

// shutdown stops the servers: no new connections, requests in progress
// given the grace period (cut short by Close), then their contexts
// cancelled and their connections closed, and a bounded wait for their
// handlers to return.
func (s *Server) shutdown(servers []*http.Server, cancelHandlers func()) {
	log := s.o.logger
	if s.o.health != nil {
		s.o.health.Shutdown()
	}
	if s.o.delay > 0 {
		log.Info("not ready: still serving for the shutdown delay", "delay", s.o.delay.String())
		t := time.NewTimer(s.o.delay)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
		}
	}
	log.Info("shutting down", "grace", s.o.grace.String())
	graceCtx, cancel := context.WithTimeout(context.Background(), s.o.grace)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-graceCtx.Done():
		}
	}()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() {
			if err := srv.Shutdown(graceCtx); err != nil {
				log.Warn("requests still in progress when the grace period ended: cancelled", "error", err.Error())
			}
		})
	}
	wg.Wait()
	cancelHandlers()
	for _, srv := range servers {
		_ = srv.Close()
	}
	select {
	case <-s.inflight.idle():
	case <-time.After(abandonWait):
		log.Warn("handlers still running after cancellation: closing anyway")
	}
}

// tracker counts the requests being handled, so that what WithCloseAfter
// names is closed only after them (or after a bounded wait).
type tracker struct {
	mu     sync.Mutex
	n      int
	waiter chan struct{} // closed when n drops to 0
}

func (t *tracker) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		t.mu.Lock()
		t.n++
		t.mu.Unlock()
		defer t.done()
		h.ServeHTTP(w, req)
	})
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.waiter != nil {
		close(t.waiter)
		t.waiter = nil
	}
}

// idle is closed once no request is being handled.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	if t.n == 0 {
		close(ch)
	} else {
		t.waiter = ch
	}
	return ch
}
