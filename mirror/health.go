package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/buildcache/buildcache/cache"
)

// The paths a Health answers.
const (
	HealthzPath = "/healthz" // liveness: the process serves
	ReadyzPath  = "/readyz"  // readiness: the store takes writes, not shutting down
)

// Defaults of a Health's store probe.
const (
	// DefaultProbeInterval is how long a probe's outcome answers /readyz
	// before the store is probed again.
	DefaultProbeInterval = 2 * time.Second
	// DefaultProbeTimeout is how long /readyz waits for a probe before it
	// answers not ready.
	DefaultProbeTimeout = 2 * time.Second
)

// Why a Health is not ready, as /readyz says it (its log says more).
var (
	ErrShuttingDown     = errors.New("mirror: shutting down")
	ErrStoreNotWritable = errors.New("mirror: store not writable")
	ErrProbeTimeout     = errors.New("mirror: store probe did not answer in time")
)

// Health answers a mirror's health probes, for the kubelet, a load
// balancer or a node's integration (buildcache node-config waits for
// /readyz before it points containerd at the mirror):
//
//   - GET or HEAD /healthz: 200 while the process serves. Liveness only:
//     it stays 200 while the server shuts down and whatever the store
//     does, so that a liveness probe never restarts a mirror that is
//     draining or waiting for a disk.
//   - GET or HEAD /readyz: 200 when the mirror should get new requests,
//     else 503 with the reason on one line ("shutting down", "store not
//     writable", "store probe did not answer in time"; the error behind
//     it goes to the log, not to the unauthenticated client). Not ready
//     once shutdown has begun (Shutdown; a Server given WithHealth calls
//     it when its context ends, before any grace period or delay), and
//     while the store fails its write probe (cache.WriteProber: localfs
//     creates, writes, syncs and removes a 4 KiB file in its temp
//     directory, so a read-only or full file system, or a closed store,
//     is not ready; a tier probes its near tier). A probe is run at most
//     once per WithProbeInterval (2 s) whatever the number of probes, one
//     at a time, and waited for at most WithProbeTimeout (2 s): a disk
//     that hangs makes the mirror not ready, not its probes hang, and a
//     probe stuck in the kernel is not started again until it returns. A
//     store with no write probe (s3, mem) is ready until shutdown.
//
// /readyz does not ask the upstream registries, nor a tier's far tier:
// an upstream outage would take every node's mirror out of rotation at
// once, while the mirror still serves what it holds (stale within its
// budget) and a client falls back to the upstream for the rest anyway;
// a far tier that is down leaves the near tier serving. Nor does it fail
// when the store's byte budget or free-space floor is reached: a write
// then evicts to make room.
//
// Health logs when readiness changes (not ready, with the reason and the
// error, at Warn; ready again at Info), never a probe. It is an
// http.Handler for the two paths; Route puts it in front of another
// handler, as a Server given WithHealth does on each of its listeners,
// ahead of authentication and access logs.
type Health struct {
	prober   cache.WriteProber // nil: the store has no write probe
	o        healthOptions
	shutdown atomic.Bool

	mu       sync.Mutex
	checked  bool          // a probe has ended
	err      error         // its outcome
	at       time.Time     // when it ended (or was given up on)
	running  chan struct{} // closed when the probe in flight ends; nil: none
	started  time.Time     // when the probe in flight started
	lastErr  error         // the readiness last logged, to log changes only
	reported bool
}

type healthOptions struct {
	interval time.Duration
	timeout  time.Duration
	logger   *slog.Logger
}

// HealthOption configures a Health.
type HealthOption func(*healthOptions) error

// WithProbeInterval sets how long a store probe's outcome answers
// /readyz before the next /readyz probes again; 0 probes on every
// /readyz (one probe at a time all the same). Default
// DefaultProbeInterval (2 s).
func WithProbeInterval(d time.Duration) HealthOption {
	return func(o *healthOptions) error {
		if d < 0 {
			return fmt.Errorf("mirror: WithProbeInterval(%v): negative", d)
		}
		o.interval = d
		return nil
	}
}

// WithProbeTimeout sets how long /readyz waits for a store probe before
// it answers not ready (the probe is left to finish, and its outcome
// answers the next /readyz). Default DefaultProbeTimeout (2 s).
func WithProbeTimeout(d time.Duration) HealthOption {
	return func(o *healthOptions) error {
		if d <= 0 {
			return fmt.Errorf("mirror: WithProbeTimeout(%v): must be positive", d)
		}
		o.timeout = d
		return nil
	}
}

// WithHealthLogger logs readiness changes to logger. Default: none.
func WithHealthLogger(logger *slog.Logger) HealthOption {
	return func(o *healthOptions) error {
		if logger == nil {
			return errors.New("mirror: WithHealthLogger: nil logger")
		}
		o.logger = logger
		return nil
	}
}

// NewHealth returns the health of a mirror serving store (the
// resolver's Store()).
func NewHealth(store cache.LayerCache, opts ...HealthOption) (*Health, error) {
	if store == nil {
		return nil, errors.New("mirror: NewHealth: nil store")
	}
	o := healthOptions{interval: DefaultProbeInterval, timeout: DefaultProbeTimeout,
		logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	h := &Health{o: o}
	h.prober, _ = cache.As[cache.WriteProber](store)
	return h, nil
}

// Shutdown makes the mirror not ready from now on: call it when shutdown
// begins, before the listeners close, so that what routes requests here
// stops. A Server given WithHealth calls it.
func (h *Health) Shutdown() {
	if !h.shutdown.Swap(true) {
		h.report(ErrShuttingDown, nil)
	}
}

// Ready returns nil when the mirror is ready, else an error wrapping
// ErrShuttingDown, ErrStoreNotWritable or ErrProbeTimeout. It waits for
// a store probe at most WithProbeTimeout, or until ctx ends.
func (h *Health) Ready(ctx context.Context) error {
	if h.shutdown.Load() {
		return ErrShuttingDown
	}
	err := h.storeErr(ctx)
	if h.shutdown.Load() {
		return ErrShuttingDown
	}
	if err != nil && !errors.Is(err, ErrStoreNotWritable) && !errors.Is(err, ErrProbeTimeout) {
		return err // ctx ended: nothing learnt about the store
	}
	h.report(reason(err), err)
	return err
}

// reason is the sentinel err wraps (nil for nil), for /readyz and the
// change log.
func reason(err error) error {
	for _, r := range []error{ErrShuttingDown, ErrStoreNotWritable, ErrProbeTimeout} {
		if errors.Is(err, r) {
			return r
		}
	}
	return err
}

// storeErr is the outcome of the last probe if it is recent, else of a
// new one (or of the one in flight), waited for at most the timeout.
func (h *Health) storeErr(ctx context.Context) error {
	if h.prober == nil {
		return nil
	}
	h.mu.Lock()
	now := time.Now()
	if h.checked && now.Sub(h.at) < h.o.interval {
		err := h.err
		h.mu.Unlock()
		return err
	}
	if h.running == nil {
		h.running, h.started = make(chan struct{}), now
		go h.probe(h.running)
	}
	running, started := h.running, h.started
	h.mu.Unlock()

	timer := time.NewTimer(h.o.timeout - now.Sub(started))
	defer timer.Stop()
	select {
	case <-running:
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.err
	case <-timer.C:
		err := fmt.Errorf("%w: the store's write probe has not returned for %v", ErrProbeTimeout, time.Now().Sub(started).Round(time.Millisecond))
		h.mu.Lock()
		if h.running == running { // still stuck: answer this until it returns or the interval passes
			h.checked, h.err, h.at = true, err, time.Now()
		}
		h.mu.Unlock()
		return err
	case <-ctx.Done():
		return fmt.Errorf("mirror: readiness: %w", ctx.Err())
	}
}

// probe runs one store probe and records its outcome.
func (h *Health) probe(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), h.o.timeout)
	err := h.prober.ProbeWrite(ctx)
	cancel()
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrStoreNotWritable, err)
	}
	h.mu.Lock()
	h.checked, h.err, h.at, h.running = true, err, time.Now(), nil
	h.mu.Unlock()
	close(done)
}

// report logs a change of readiness: why (nil: ready) and the error.
func (h *Health) report(why, err error) {
	h.mu.Lock()
	changed := !h.reported || why != h.lastErr
	h.reported, h.lastErr = true, why
	h.mu.Unlock()
	switch {
	case !changed:
	case why == nil:
		h.o.logger.Info("ready")
	case err == nil:
		h.o.logger.Warn("not ready", "reason", readyText(why))
	default:
		h.o.logger.Warn("not ready", "reason", readyText(why), "error", err.Error())
	}
}

// readyText is what /readyz says for why.
func readyText(why error) string {
	switch why {
	case nil:
		return "ok"
	case ErrShuttingDown:
		return "shutting down"
	case ErrStoreNotWritable:
		return "store not writable"
	case ErrProbeTimeout:
		return "store probe did not answer in time"
	}
	return "not ready"
}

// ServeHTTP answers GET and HEAD of HealthzPath and ReadyzPath, 405 for
// other methods there, and 404 elsewhere.
func (h *Health) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != HealthzPath && req.URL.Path != ReadyzPath {
		http.NotFound(w, req)
		return
	}
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	status, text := http.StatusOK, "ok"
	if req.URL.Path == ReadyzPath {
		if err := h.Ready(req.Context()); err != nil {
			status, text = http.StatusServiceUnavailable, "not ready: "+readyText(reason(err))
		}
	}
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if req.Method == http.MethodGet {
		_, _ = fmt.Fprintln(w, text)
	}
}

// Route returns next with HealthzPath and ReadyzPath answered by h
// first: put it outside authentication and access logging, so probes
// need no credentials and are not logged.
func (h *Health) Route(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == HealthzPath || req.URL.Path == ReadyzPath {
			h.ServeHTTP(w, req)
			return
		}
		next.ServeHTTP(w, req)
	})
}
