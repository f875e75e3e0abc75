package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/metrics"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/registry"
)

// serveFlags are serve's flags.
type serveFlags struct {
	listen          string
	metricsListen   string
	allowRemote     bool
	upstreams       []string
	defaultUpstream string
	maxAge          time.Duration
	tlsCert, tlsKey string
	htpasswd        string
	tokenFile       string
	failedLogins    int
	logFormat       string
	shutdownTimeout time.Duration
	shutdownDelay   time.Duration
	staleBudget     time.Duration
	notFoundTTL     time.Duration
	maxFetches      int
	stallTimeout    time.Duration
	trust           trustFlags // trust.go
}

func (a *app) serveCommand() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve --upstream NS=URL... [flags]",
		Short: "Serve the cache as a pull-through registry mirror",
		Long: `Serve the read side of the OCI distribution API from the cache, fetching
what it lacks from the upstream registries: a pull-through mirror for the
Docker daemon (registry-mirrors), containerd and the kubelet (hosts.toml),
and buildkitd (buildkitd.toml mirrors). A tag request revalidates with one
HEAD upstream (none within --max-age) and is served from the cache when the
upstream fails; a digest that is cached makes no upstream request.

--upstream NS=URL maps the registry a client names (containerd's ?ns=
query) to the upstream that serves it: docker.io=https://registry-1.docker.io,
ghcr.io=https://ghcr.io. NS alone means NS=https://NS (docker.io:
registry-1.docker.io). An http:// URL is spoken to over plain HTTP.
Requests without ?ns= (the Docker daemon, buildkitd) go to
--default-upstream: by default the only --upstream, else docker.io when it
is mapped, else none (such requests are answered NAME_UNKNOWN).
Upstream credentials come from Docker's config.json and credential helpers.

The mirror listens on loopback: a --listen address that is not loopback is
refused unless --allow-remote is given (then use --tls-cert/--tls-key and
--htpasswd or --token-file: a warning says so otherwise). Clients
authenticate with basic credentials checked against a bcrypt htpasswd file
(htpasswd -B), or with a static token sent as "Authorization: Bearer TOKEN"
or as the password of basic credentials; both flags may be given. A client
address (IPv6: its /64) that fails --failed-logins times is answered 429
until an attempt comes back (one every 60/N seconds), its credentials
unchecked; good credentials are checked once a minute, one check at a time.
/metrics serves Prometheus metrics on the same listener (behind the same
authentication), or on --metrics-listen ADDR without it ("off": none).

/healthz answers 200 while the process serves; /readyz 200 while the
cache takes writes (a small file written, synced and removed in its temp
directory, at most every 2s) and the mirror is not shutting down, else
503 with the reason. Neither needs credentials nor is logged; changes of
readiness are. Neither asks the upstreams: an upstream outage does not
take the mirror out of rotation, as it still serves what it holds.

Every request is logged on stderr (method, path, status, bytes, duration,
client address; never a header or the query's values but ns), as text or
JSON (--log-format). The first record says "listening" with the address.

--trust-policy FILE verifies the image a tag names before it is served
(403 DENIED otherwise; see buildcache resolve --help), with the signatures
kept in the cache, so it works with the upstream down too;
/v2/<name>/referrers/<digest> serves an image's signatures and attestations.

On SIGTERM or SIGINT the mirror turns not ready, serves on for
--shutdown-delay (0 by default: time for a load balancer to notice), then
stops accepting connections, lets requests in progress finish for
--shutdown-timeout, then cancels them (a blob being fetched is not stored
half), and closes the cache so its counters are kept; a second signal
cuts the waits short.

` + seeExitCodes,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.serve(cmd.Context(), f)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:5000", "serve on `ADDR` (host:port; port 0 picks one)")
	fl.BoolVar(&f.allowRemote, "allow-remote", false, "allow a --listen or --metrics-listen address that is not loopback")
	fl.StringArrayVar(&f.upstreams, "upstream", nil, "mirror registry `NS=URL` (repeatable): docker.io=https://registry-1.docker.io; NS alone for https://NS")
	fl.StringVar(&f.defaultUpstream, "default-upstream", "", "the `NS` of --upstream that requests naming no registry go to (default: the only --upstream, else docker.io if mapped)")
	fl.Var(durationValue{&f.maxAge}, "max-age", "serve a tag with no upstream request for `D` after it was last checked (default 0: one HEAD per tag request)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS (TLS 1.2 or later) with the certificate chain in PEM `FILE` (needs --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "the private key of --tls-cert, in PEM `FILE`")
	fl.StringVar(&f.htpasswd, "htpasswd", "", "require basic credentials listed in `FILE` (user:bcrypt-hash lines, as htpasswd -B writes)")
	fl.StringVar(&f.tokenFile, "token-file", "", "require the token in `FILE`, as a bearer token or a basic password")
	fl.IntVar(&f.failedLogins, "failed-logins", mirror.DefaultFailedLogins, "refuse a client address's logins after `N` failed ones a minute (0: no limit, as behind a proxy)")
	fl.StringVar(&f.logFormat, "log-format", "text", "access log format on stderr: text or json")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "serve /metrics on `ADDR` instead of the mirror's listener, without authentication; off for none")
	fl.Var(durationValue{&f.shutdownTimeout}, "shutdown-timeout", "on SIGTERM, let requests in progress finish for `D` (default 30s)")
	fl.Var(durationValue{&f.shutdownDelay}, "shutdown-delay", "on SIGTERM, answer /readyz 503 and keep serving for `D` before refusing connections (default 0)")
	f.staleBudget, f.notFoundTTL = registry.DefaultStaleBudget, registry.DefaultNotFoundTTL
	fl.Var(durationValue{&f.staleBudget}, "stale-budget", staleBudgetHelp)
	fl.Var(durationValue{&f.notFoundTTL}, "not-found-ttl", "answer a tag the upstream answered 404 for with that 404, without asking again, for `D`; 0: ask every time")
	fl.IntVar(&f.maxFetches, "max-upstream-fetches", mirror.DefaultMaxUpstreamFetches, "download at most `N` blobs from upstreams at once; more wait in line")
	f.stallTimeout = mirror.DefaultStallTimeout
	fl.Var(durationValue{&f.stallTimeout}, "stall-timeout", "close a response whose client takes no bytes for `D` (0: never)")
	f.trust.add(cmd, false)
	return cmd
}

// upstream is one parsed --upstream.
type upstream struct {
	ns       string // what clients name: "docker.io"
	host     string // what is asked: "registry-1.docker.io"
	insecure bool   // plain HTTP
}

func parseUpstream(s string) (upstream, error) {
	ns, raw, hasURL := strings.Cut(s, "=")
	ns = strings.TrimSpace(ns)
	if ns == "" || strings.ContainsAny(ns, "/?#@ ") {
		return upstream{}, usagef("--upstream %q: want NS=URL (docker.io=https://registry-1.docker.io) or a registry name", s)
	}
	if !hasURL {
		raw = "https://" + ns
		if ns == "docker.io" {
			raw = "https://registry-1.docker.io"
		}
	}
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return upstream{}, usagef("--upstream %q: the URL must be scheme://host[:port] (credentials come from Docker's config.json)", s)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return upstream{ns: ns, host: u.Host}, nil
	case "http":
		return upstream{ns: ns, host: u.Host, insecure: true}, nil
	}
	return upstream{}, usagef("--upstream %q: scheme %q: want http or https", s, u.Scheme)
}

// checkLoopback refuses an address other machines can reach unless
// allowed: a mirror serves what it can fetch with its credentials.
func checkLoopback(flag, addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--%s %q: want host:port: %v", flag, addr, err)
	}
	if allowRemote || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usagef("--%s %s is not a loopback address: pass --allow-remote to serve other machines (with --tls-cert and --htpasswd or --token-file)", flag, addr)
}

// serveConfig is everything serve checks before it opens the cache.
type serveConfig struct {
	upstreams   map[string]string
	defaultHost string
	insecure    []string
	names       []string // "ns=scheme://host" for the listening record
	tls         *tls.Config
	auth        *mirror.Auth // nil: no authentication
	logger      *slog.Logger
}

func (a *app) serveConfig(f *serveFlags) (*serveConfig, error) {
	c := &serveConfig{upstreams: map[string]string{}}
	switch f.logFormat {
	case "text":
		c.logger = slog.New(slog.NewTextHandler(a.stderr, nil))
	case "json":
		c.logger = slog.New(slog.NewJSONHandler(a.stderr, nil))
	default:
		return nil, usagef("--log-format %q: want text or json", f.logFormat)
	}
	if len(f.upstreams) == 0 {
		return nil, usagef("serve needs at least one --upstream NS=URL (docker.io=https://registry-1.docker.io)")
	}
	for _, s := range f.upstreams {
		u, err := parseUpstream(s)
		if err != nil {
			return nil, err
		}
		if _, dup := c.upstreams[u.ns]; dup {
			return nil, usagef("--upstream %s is given twice", u.ns)
		}
		c.upstreams[u.ns] = u.host
		scheme := "https"
		if u.insecure {
			c.insecure = append(c.insecure, u.host)
			scheme = "http"
		}
		c.names = append(c.names, u.ns+"="+scheme+"://"+u.host)
	}
	sort.Strings(c.names)
	switch def := f.defaultUpstream; {
	case def != "":
		h, ok := c.upstreams[def]
		if !ok {
			return nil, usagef("--default-upstream %s is not one of the --upstream registries", def)
		}
		c.defaultHost = h
	case len(c.upstreams) == 1:
		for _, h := range c.upstreams {
			c.defaultHost = h
		}
	default:
		c.defaultHost = c.upstreams["docker.io"]
	}
	if f.maxFetches < 1 {
		return nil, usagef("--max-upstream-fetches %d: want at least 1", f.maxFetches)
	}
	if err := checkLoopback("listen", f.listen, f.allowRemote); err != nil {
		return nil, err
	}
	if f.metricsListen != "" && f.metricsListen != "off" {
		if err := checkLoopback("metrics-listen", f.metricsListen, f.allowRemote); err != nil {
			return nil, err
		}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	if f.tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return nil, usagef("--tls-cert/--tls-key: %v", err)
		}
		c.tls = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	}
	var checkers []mirror.Checker
	if f.htpasswd != "" {
		file, err := os.Open(f.htpasswd)
		if err != nil {
			return nil, usagef("--htpasswd: %v", err)
		}
		h, err := mirror.ParseHtpasswd(file)
		file.Close()
		if err != nil {
			return nil, usagef("--htpasswd %s: %v", f.htpasswd, err)
		}
		checkers = append(checkers, h)
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, usagef("--token-file: %v", err)
		}
		t, err := mirror.NewBearerToken(string(b))
		if err != nil {
			return nil, usagef("--token-file %s: %v", f.tokenFile, err)
		}
		checkers = append(checkers, t)
	}
	if len(checkers) > 0 {
		auth, err := mirror.NewAuth(mirror.AnyOf(checkers...),
			mirror.WithFailedLoginLimit(f.failedLogins, time.Minute), mirror.WithAuthLogger(c.logger))
		if err != nil {
			return nil, usagef("--failed-logins: %v", err)
		}
		c.auth = auth
	}
	if f.allowRemote && (c.tls == nil || c.auth == nil) {
		a.warnf("serve --allow-remote without TLS and authentication: anyone who reaches the port can pull through this mirror with its upstream credentials, in clear text")
	}
	return c, nil
}

func (a *app) serve(ctx context.Context, f *serveFlags) error {
	cfg, err := a.serveConfig(f)
	if err != nil {
		return err
	}
	a.cacheLog = cfg.logger // a tier's far tier warnings go with the other records
	store, err := a.openCache(ctx, false)
	if err != nil {
		return err
	}
	client, err := a.newClient(cfg.insecure...)
	if err != nil {
		return err
	}
	topts, err := f.trust.resolverOptions()
	if err != nil {
		return err
	}
	res, err := registry.NewResolver(store, append([]registry.Option{registry.WithClient(client), registry.WithLogger(cfg.logger),
		registry.WithStaleBudget(f.staleBudget), registry.WithNotFoundTTL(f.notFoundTTL)}, topts...)...)
	if err != nil {
		return err
	}
	opts := []mirror.Option{mirror.WithUpstreams(cfg.upstreams), mirror.WithMaxAge(f.maxAge),
		mirror.WithMaxUpstreamFetches(f.maxFetches), mirror.WithStallTimeout(f.stallTimeout)}
	if cfg.defaultHost != "" {
		opts = append(opts, mirror.WithUpstream(cfg.defaultHost))
	}
	m, err := mirror.New(res, opts...)
	if err != nil {
		return usagef("%v", err)
	}
	// Closed by the server after its shutdown; again here if it never ran.
	defer m.Close()
	reg := metricsRegistry(res, store, m)
	if cfg.auth != nil {
		reg.MustRegister(authCounters(cfg.auth)...)
	}
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	var main http.Handler = m
	if f.metricsListen == "" {
		main = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path == "/metrics" && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
				metricsHandler.ServeHTTP(w, req)
				return
			}
			m.ServeHTTP(w, req)
		})
	}
	if cfg.auth != nil {
		main = cfg.auth.Wrap(main)
	}
	health, err := mirror.NewHealth(store, mirror.WithHealthLogger(cfg.logger))
	if err != nil {
		return err
	}
	srvOpts := []mirror.ServerOption{mirror.WithServerLogger(cfg.logger), mirror.WithCloseAfter(m),
		mirror.WithHealth(health), mirror.WithShutdownDelay(f.shutdownDelay)}
	if f.shutdownTimeout > 0 {
		srvOpts = append(srvOpts, mirror.WithShutdownGrace(f.shutdownTimeout))
	}
	if cfg.tls != nil {
		srvOpts = append(srvOpts, mirror.WithTLS(cfg.tls))
	}

	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	defer l.Close()
	scheme := "http"
	if cfg.tls != nil {
		scheme = "https"
	}
	attrs := []any{"addr", l.Addr().String(), "url", scheme + "://" + l.Addr().String(),
		"upstreams", strings.Join(cfg.names, ","), "default_upstream", cfg.defaultHost,
		"cache", a.cacheName(), "auth", cfg.auth != nil}
	if f.metricsListen != "" && f.metricsListen != "off" {
		ml, err := net.Listen("tcp", f.metricsListen)
		if err != nil {
			return err
		}
		defer ml.Close()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metricsHandler)
		srvOpts = append(srvOpts, mirror.WithMetricsListener(ml, mirror.AccessLog(mux, cfg.logger)))
		attrs = append(attrs, "metrics_addr", ml.Addr().String())
	}
	srv, err := mirror.NewServer(mirror.AccessLog(main, cfg.logger), srvOpts...)
	if err != nil {
		return err
	}
	cfg.logger.Info("listening", attrs...)
	stop := closeOnSecondSignal(ctx, srv, cfg.logger)
	defer stop()
	return srv.Serve(ctx, l)
}

// closeOnSecondSignal cuts the server's grace period short when SIGTERM
// or SIGINT comes again once ctx (ended by the first) is done. The
// returned stop ends the watch.
func closeOnSecondSignal(ctx context.Context, srv *mirror.Server, logger *slog.Logger) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(again)
		select {
		case <-again:
			logger.Warn("second signal: not waiting for requests in progress")
			_ = srv.Close()
		case <-done:
		}
	}()
	return func() { close(done) }
}

// metricsRegistry is a fresh registry with the mirror's, the resolver's
// and the cache's collectors (a tier's per-tier series when it is one),
// and the process's.
func metricsRegistry(res *registry.Resolver, store cache.LayerCache, m *mirror.Mirror) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewResolverCollector(res), metrics.NewMirrorCollector(m),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if t, ok := cache.As[metrics.TierStatsReporter](store); ok {
		reg.MustRegister(metrics.NewTierCollector("mirror", t))
	} else if sr, ok := store.(cache.StatsReporter); ok {
		reg.MustRegister(metrics.NewLayerCacheCollector("mirror", sr))
	}
	return reg
}

// authCounters are the buildcache_mirror_auth_* counters of a's Stats.
func authCounters(a *mirror.Auth) []prometheus.Collector {
	counter := func(name, help string, v func(mirror.AuthStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "buildcache", Subsystem: "mirror_auth", Name: name, Help: help},
			func() float64 { return float64(v(a.Stats())) })
	}
	return []prometheus.Collector{
		counter("checks_total", "Credentials checked (a bcrypt each for --htpasswd); remembered ones are not.",
			func(s mirror.AuthStats) uint64 { return s.Checks }),
		counter("failed_logins_total", "Credentials refused (401).",
			func(s mirror.AuthStats) uint64 { return s.FailedLogins }),
		counter("limited_total", "Requests refused unchecked (429) because their client address had no failed logins left.",
			func(s mirror.AuthStats) uint64 { return s.Limited }),
		counter("busy_total", "Requests refused unchecked (503) because too many were waiting for a check.",
			func(s mirror.AuthStats) uint64 { return s.Busy }),
	}
}
