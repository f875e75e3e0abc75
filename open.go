package buildcache

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/redact"
	"github.com/buildcache/buildcache/internal/units"
	"github.com/buildcache/buildcache/ocirepo"
	"github.com/buildcache/buildcache/regclient"

	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	bcs3 "github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// Opener opens a LayerCache from a URL of its scheme. The caller closes
// what it returns.
type Opener func(ctx context.Context, u *url.URL) (cache.LayerCacheCloser, error)

// URLMux opens LayerCaches by URL. Its zero value knows the built-in
// schemes (see Open); Register adds others or replaces a built-in one for
// this mux only. It is safe for concurrent use.
type URLMux struct {
	// Logger, if set, gets the records of what the mux opens that logs:
	// a tier's warning when its far tier starts failing and its record
	// when the far tier answers again (tier.WithLogger). Nil: none.
	Logger *slog.Logger

	mu      sync.RWMutex
	schemes map[string]Opener
}

// Register makes scheme open with o.
func (m *URLMux) Register(scheme string, o Opener) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.schemes == nil {
		m.schemes = map[string]Opener{}
	}
	m.schemes[strings.ToLower(scheme)] = o
}

func (m *URLMux) opener(scheme string) (Opener, bool) {
	m.mu.RLock()
	o, ok := m.schemes[scheme]
	m.mu.RUnlock()
	if ok {
		return o, true
	}
	switch scheme {
	case "file":
		return openFile, true
	case "mem":
		return openMem, true
	case "tier":
		return m.openTier, true
	case "s3":
		return openS3, true
	case "oci":
		return openOCI, true
	}
	return nil, false
}

// builtinSchemes are the schemes every URLMux knows.
var builtinSchemes = []string{"file", "mem", "oci", "s3", "tier"}

// Open opens the LayerCache a URL names, with the built-in schemes:
//
//	file:///var/cache/buildcache?max_bytes=20GiB&min_free_bytes=1GiB&ttl=7d
//	mem://?max_bytes=512MiB
//	s3://bucket/prefix/?region=us-east-1&endpoint=http://127.0.0.1:7070&use_path_style=true[&timeout=10s]
//	oci://registry.example.com/team/cache?index_tag=buildcache-index[&insecure=true]
//	tier://?near=<url>&far=<url>[&async_far=<max pending bytes>]
//
// (near and far are URL-escaped URLs.) S3 credentials come from the AWS
// SDK's default chain (environment, shared config, instance roles) and
// registry credentials from the Docker keychain, never from the URL:
// userinfo in the URL or in endpoint= is an error. blobs_prefix,
// manifests_prefix and touch_refresh set the BuildKit-compatible layout
// options of package s3; timeout=D bounds each wait on the S3 endpoint
// (connecting, an answer's headers, the next bytes of a body: s3.WithTimeouts,
// default 10s, 10s and 30s); lease_ttl and claim_ttl set how long a lease
// or a revalidation claim of a process that died holds (s3.WithLeaseTTL,
// s3.WithClaimTTL). The host of an oci:// URL is the registry, even a
// single label ("oci://harbor/team/cache" is repository team/cache on
// harbor, see ocirepo.NewAt). Unknown query parameters are an
// error, so a typo is never silently ignored. Errors name the URL without
// userinfo or query string.
//
// Close what Open returns when done: a local store then flushes its
// lifetime counters, a tier finishes its background far writes and
// closes both tiers. Capabilities beyond cache.LayerCache (leases, roots,
// a *localfs.Store's GC) are found with cache.As, through tiers.
func Open(ctx context.Context, rawURL string) (cache.LayerCacheCloser, error) {
	var m URLMux
	return m.Open(ctx, rawURL)
}

// Open opens the LayerCache rawURL names.
func (m *URLMux) Open(ctx context.Context, rawURL string) (cache.LayerCacheCloser, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error holds rawURL, password and all.
		return nil, fmt.Errorf("buildcache: invalid cache URL: %w", redact.Error(err))
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("buildcache: cache URL %s has no scheme (want file://, mem://, s3://, tier://, ...)", redact.URL(u))
	}
	o, ok := m.opener(strings.ToLower(u.Scheme))
	if !ok {
		return nil, fmt.Errorf("buildcache: cache URL %s: unknown scheme %q (known: %s)", redact.URL(u), u.Scheme, strings.Join(m.known(), ", "))
	}
	c, err := o(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("buildcache: opening %s: %w", redact.URL(u), err)
	}
	return c, nil
}

func (m *URLMux) known() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := slices.Clone(builtinSchemes)
	for s := range m.schemes {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// query checks that u has only the allowed parameters, each once.
func query(u *url.URL, allowed ...string) (url.Values, error) {
	q := u.Query()
	for k, v := range q {
		if !slices.Contains(allowed, k) {
			return nil, fmt.Errorf("unknown query parameter %q (allowed: %s)", k, strings.Join(allowed, ", "))
		}
		if len(v) != 1 {
			return nil, fmt.Errorf("query parameter %q given %d times", k, len(v))
		}
	}
	return q, nil
}

func sizeParam(q url.Values, key string) (int64, bool, error) {
	v := q.Get(key)
	if v == "" {
		return 0, false, nil
	}
	n, err := units.ParseSize(v)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", key, err)
	}
	return n, true, nil
}

func openFile(ctx context.Context, u *url.URL) (cache.LayerCacheCloser, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("file URL with host %q: want file:///absolute/path", u.Host)
	}
	if u.Path == "" {
		return nil, fmt.Errorf("file URL has no path: want file:///absolute/path")
	}
	q, err := query(u, "max_bytes", "min_free_bytes", "ttl")
	if err != nil {
		return nil, err
	}
	var opts []localfs.Option
	if n, ok, err := sizeParam(q, "max_bytes"); err != nil {
		return nil, err
	} else if ok {
		opts = append(opts, localfs.WithMaxBytes(n))
	}
	if n, ok, err := sizeParam(q, "min_free_bytes"); err != nil {
		return nil, err
	} else if ok {
		opts = append(opts, localfs.WithMinFreeBytes(n))
	}
	if v := q.Get("ttl"); v != "" {
		d, err := units.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("ttl: %w", err)
		}
		opts = append(opts, localfs.WithTTL(d))
	}
	return localfs.Open(u.Path, opts...)
}

func openMem(ctx context.Context, u *url.URL) (cache.LayerCacheCloser, error) {
	if u.Host != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("mem URL takes no host or path: want mem://?max_bytes=N")
	}
	q, err := query(u, "max_bytes")
	if err != nil {
		return nil, err
	}
	n, _, err := sizeParam(q, "max_bytes")
	if err != nil {
		return nil, err
	}
	c, err := memory.NewLayerCache(memory.WithLayerCacheMaxBytes(n))
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (m *URLMux) openTier(ctx context.Context, u *url.URL) (cache.LayerCacheCloser, error) {
	q, err := query(u, "near", "far", "async_far")
	if err != nil {
		return nil, err
	}
	if q.Get("near") == "" || q.Get("far") == "" {
		return nil, fmt.Errorf("tier URL needs near=<url> and far=<url>")
	}
	var opts []tier.Option
	if n, ok, err := sizeParam(q, "async_far"); err != nil {
		return nil, err
	} else if ok {
		opts = append(opts, tier.WithAsyncFar(n))
	}
	if m.Logger != nil {
		opts = append(opts, tier.WithLogger(m.Logger))
	}
	near, err := m.Open(ctx, q.Get("near"))
	if err != nil {
		return nil, fmt.Errorf("near tier: %w", err)
	}
	far, err := m.Open(ctx, q.Get("far"))
	if err != nil {
		near.Close()
		return nil, fmt.Errorf("far tier: %w", err)
	}
	t, err := tier.New(near, far, opts...)
	if err != nil {
		near.Close()
		far.Close()
		return nil, err
	}
	return t, nil
}

func openS3(ctx context.Context, u *url.URL) (cache.LayerCacheCloser, error) {
	if u.Host == "" {
		return nil, fmt.Errorf("s3 URL has no bucket: want s3://bucket/prefix")
	}
	if u.User != nil {
		return nil, fmt.Errorf("s3 URL must not carry credentials: they come from the AWS SDK's default chain")
	}
	q, err := query(u, "region", "endpoint", "use_path_style", "blobs_prefix", "manifests_prefix", "touch_refresh", "timeout", "lease_ttl", "claim_ttl")
	if err != nil {
		return nil, err
	}
	endpoint := q.Get("endpoint")
	if endpoint != "" {
		if err := checkEndpoint(endpoint); err != nil {
			return nil, err
		}
	}
	var cfgOpts []func(*awsconfig.LoadOptions) error
	if r := q.Get("region"); r != "" {
		cfgOpts = append(cfgOpts, awsconfig.WithRegion(r))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, cfgOpts...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // S3-compatible servers rarely care; AWS needs one
	}
	pathStyle := false
	if v := q.Get("use_path_style"); v != "" {
		if pathStyle, err = strconv.ParseBool(v); err != nil {
			return nil, fmt.Errorf("use_path_style=%q: want true or false", v)
		}
	}
	client := awss3.NewFromConfig(cfg, func(o *awss3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = pathStyle
	})
	var opts []bcs3.Option
	if v := q.Get("blobs_prefix"); v != "" {
		opts = append(opts, bcs3.WithBlobsPrefix(v))
	}
	if v := q.Get("manifests_prefix"); v != "" {
		opts = append(opts, bcs3.WithManifestsPrefix(v))
	}
	if v := q.Get("touch_refresh"); v != "" {
		d, err := units.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("touch_refresh: %w", err)
		}
		opts = append(opts, bcs3.WithTouchRefresh(d))
	}
	if v := q.Get("timeout"); v != "" {
		d, err := units.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("timeout: %w", err)
		}
		opts = append(opts, bcs3.WithTimeouts(bcs3.Timeouts{Connect: d, ResponseHeader: d, Stall: d}))
	}
	for key, opt := range map[string]func(time.Duration) bcs3.Option{"lease_ttl": bcs3.WithLeaseTTL, "claim_ttl": bcs3.WithClaimTTL} {
		if v := q.Get(key); v != "" {
			d, err := units.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			opts = append(opts, opt(d))
		}
	}
	return bcs3.New(client, u.Host, strings.TrimPrefix(u.Path, "/"), opts...)
}

// checkEndpoint accepts an S3 endpoint of the form http(s)://host[:port][/path]
// and nothing that carries credentials, which would be repeated in every
// error naming the endpoint (they come from the SDK's chain). Its errors
// name the endpoint redacted.
func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil {
		return fmt.Errorf("endpoint: %w", redact.Error(err))
	}
	if u.User != nil {
		return fmt.Errorf("endpoint %s must not carry credentials: they come from the AWS SDK's default chain", redact.URL(u))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint %s: want http://host[:port] or https://host[:port]", redact.URL(u))
	}
	return nil
}

func openOCI(ctx context.Context, u *url.URL) (cache.LayerCacheCloser, error) {
	if u.Host == "" || strings.Trim(u.Path, "/") == "" {
		return nil, fmt.Errorf("oci URL needs a registry and a repository: want oci://host/repo")
	}
	if u.User != nil {
		return nil, fmt.Errorf("oci URL must not carry credentials: they come from the Docker keychain")
	}
	q, err := query(u, "index_tag", "insecure")
	if err != nil {
		return nil, err
	}
	var opts []ocirepo.Option
	if v := q.Get("index_tag"); v != "" {
		opts = append(opts, ocirepo.WithIndexTag(v))
	}
	if v := q.Get("insecure"); v != "" {
		insecure, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("insecure=%q: want true or false", v)
		}
		if insecure {
			client, err := regclient.New(regclient.WithInsecureRegistries(u.Host))
			if err != nil {
				return nil, err
			}
			opts = append(opts, ocirepo.WithClient(client))
		}
	}
	// The URL's host is the registry, even one that a reference would
	// take for a Docker Hub namespace ("oci://harbor/team/cache").
	return ocirepo.NewAt(u.Host, strings.Trim(u.Path, "/"), opts...)
}
