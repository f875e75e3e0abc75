package buildkit

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/platforms"
	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/buildkit/client"
	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	solvererrdefs "github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/util/progress/progressui"
	digest "github.com/opencontainers/go-digest"
	"github.com/tonistiigi/fsutil"
)

// defaultPlatforms are what Build builds for when neither WithPlatforms
// nor a Pinned names platforms.
func defaultPlatforms() []string { return []string{"linux/amd64", "linux/arm64"} }

// Output is where Build puts the image it built: OCITarball, LocalDir or
// PushImage. With no output the build only fills the caches.
type Output struct {
	typ   string
	path  string // OCITarball: the tar file; LocalDir: the directory
	name  string // PushImage: the image name
	attrs map[string]string
}

// OCITarball writes the image (an index with one manifest per platform)
// as an OCI image layout tarball to path. The file appears only when the
// build succeeded; a failed build leaves no partial file.
func OCITarball(path string) Output {
	return Output{typ: client.ExporterOCI, path: path, attrs: map[string]string{}}
}

// LocalDir copies the built filesystem into dir, in one subdirectory per
// platform ("linux_amd64", "linux_arm64") when there are several.
func LocalDir(dir string) Output {
	return Output{typ: client.ExporterLocal, path: dir, attrs: map[string]string{}}
}

// PushImage pushes the image to a registry under ref ("host/repo:tag").
// The daemon pushes, with credentials the client's Docker config
// (~/.docker/config.json) holds; plain HTTP is allowed for loopback hosts
// (127.0.0.1, localhost, ::1).
func PushImage(ref string) Output {
	attrs := map[string]string{"name": ref, "push": "true"}
	if r, err := name.ParseReference(ref); err == nil && isLoopback(r.Context().RegistryStr()) {
		attrs["registry.insecure"] = "true"
	}
	return Output{typ: client.ExporterImage, name: ref, attrs: attrs}
}

// WithAttr returns the output with an exporter attribute added, e.g.
// ("compression", "zstd") or ("oci-mediatypes", "true").
func (o Output) WithAttr(key, value string) Output {
	o.attrs = maps.Clone(o.attrs)
	o.attrs[key] = value
	return o
}

func isLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BuildOption configures Build. Besides the options below, the PinOptions
// WithPlatforms, WithBuildArgs and WithTarget are BuildOptions too, with
// the same meaning for the build as for PinBaseImages, so one list serves
// both calls; Build ignores the other PinOptions.
type BuildOption interface {
	applyBuild(*buildOptions) error
}

type buildOptionFunc func(*buildOptions) error

func (f buildOptionFunc) applyBuild(o *buildOptions) error { return f(o) }

// applyBuild makes WithPlatforms, WithBuildArgs and WithTarget usable
// with Build.
func (f PinOption) applyBuild(o *buildOptions) error { return f(&o.pin) }

type buildOptions struct {
	pin            pinOptions // WithPlatforms, WithBuildArgs, WithTarget
	platforms      []string
	dockerfileName string
	dockerfile     []byte
	attrs          map[string]string
	pinned         *Pinned
	ociStores      map[string]content.Store
	cacheImports   []client.CacheOptionsEntry
	cacheExports   []client.CacheOptionsEntry
	outputs        []Output
	progress       io.Writer
	progressMode   progressui.DisplayMode
	session        []session.Attachable
	noAuth         bool
	commits        []func() error // run after a successful solve
}

// WithDockerfile names the Dockerfile: a path relative to the context
// directory, or an absolute one (default "Dockerfile" in the context).
func WithDockerfile(path string) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		if path == "" {
			return errors.New("buildkit: WithDockerfile: empty path")
		}
		o.dockerfileName = path
		return nil
	})
}

// WithDockerfileBytes builds from this Dockerfile instead of a file. Error
// messages call it by the WithDockerfile name, "Dockerfile" by default.
func WithDockerfileBytes(dockerfile []byte) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		if dockerfile == nil {
			return errors.New("buildkit: WithDockerfileBytes(nil)")
		}
		o.dockerfile = slices.Clone(dockerfile)
		return nil
	})
}

// WithFrontendAttr sets a dockerfile frontend attribute, e.g.
// ("no-cache", "") or ("context:alpine", "docker-image://alpine:3.20"). An
// attribute that WithPinned sets to another value is a conflict.
func WithFrontendAttr(key, value string) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		if key == "" {
			return errors.New("buildkit: WithFrontendAttr: empty key")
		}
		if o.attrs == nil {
			o.attrs = map[string]string{}
		}
		o.attrs[key] = value
		return nil
	})
}

// WithPinned takes base images from the store as PinBaseImages arranged:
// its frontend attributes (named contexts) and OCI stores are added to
// the build, and in RewriteFrom mode its rewritten Dockerfile replaces
// the one named by WithDockerfile. nil is allowed and does nothing.
func WithPinned(p *Pinned) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		o.pinned = p
		return nil
	})
}

// WithOCIStore serves an OCI content store to the daemon under id, for
// named contexts "oci-layout://<id>@sha256:...".
func WithOCIStore(id string, store content.Store) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		if id == "" || store == nil {
			return errors.New("buildkit: WithOCIStore: empty id or nil store")
		}
		if o.ociStores == nil {
			o.ociStores = map[string]content.Store{}
		}
		o.ociStores[id] = store
		return nil
	})
}

// WithCacheImports adds cache sources (--import-cache), e.g. the Imports
// of CacheFor's CacheEntries.
func WithCacheImports(entries ...client.CacheOptionsEntry) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		o.cacheImports = append(o.cacheImports, cloneEntries(entries)...)
		return nil
	})
}

// WithCacheExports adds cache destinations (--export-cache).
func WithCacheExports(entries ...client.CacheOptionsEntry) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		o.cacheExports = append(o.cacheExports, cloneEntries(entries)...)
		return nil
	})
}

// WithCache adds both, as in WithCache(e.Imports, e.Exports) for a
// CacheEntries e.
func WithCache(imports, exports []client.CacheOptionsEntry) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		o.cacheImports = append(o.cacheImports, cloneEntries(imports)...)
		o.cacheExports = append(o.cacheExports, cloneEntries(exports)...)
		return nil
	})
}

// cloneEntries copies the attribute maps: BuildKit's client writes into
// them (a type=local import gets the "digest" it found in index.json), so
// entries reused for a later build would import a stale manifest.
func cloneEntries(in []client.CacheOptionsEntry) []client.CacheOptionsEntry {
	out := make([]client.CacheOptionsEntry, len(in))
	for i, e := range in {
		out[i] = client.CacheOptionsEntry{Type: e.Type, Attrs: maps.Clone(e.Attrs)}
		if out[i].Attrs == nil {
			out[i].Attrs = map[string]string{}
		}
	}
	return out
}

// WithOutput adds outputs; several may be given (BuildKit exports to each).
func WithOutput(outputs ...Output) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		for _, out := range outputs {
			if out.typ == "" {
				return errors.New("buildkit: WithOutput: zero Output; use OCITarball, LocalDir or PushImage")
			}
			if out.typ != client.ExporterImage && out.path == "" {
				return fmt.Errorf("buildkit: WithOutput: %s output without a path", out.typ)
			}
		}
		o.outputs = append(o.outputs, outputs...)
		return nil
	})
}

// WithProgress shows the build's progress on w with BuildKit's progressui:
// mode "auto" (tty if w is a terminal, else plain), "tty", "plain",
// "rawjson" or "quiet". Default: nothing is shown.
func WithProgress(w io.Writer, mode string) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		if w == nil {
			return errors.New("buildkit: WithProgress: nil writer")
		}
		m := progressui.DisplayMode(mode)
		switch m {
		case progressui.AutoMode, progressui.DefaultMode, progressui.TtyMode, progressui.PlainMode, progressui.RawJSONMode, progressui.QuietMode:
		default:
			return fmt.Errorf("buildkit: WithProgress: unknown mode %q (auto, tty, plain, rawjson, quiet)", mode)
		}
		o.progress, o.progressMode = w, m
		return nil
	})
}

// WithSession attaches more session services (secrets, SSH agents) to the
// build.
func WithSession(a ...session.Attachable) BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		o.session = append(o.session, a...)
		return nil
	})
}

// WithoutDockerAuth does not attach the Docker config credentials that
// Build offers the daemon by default.
func WithoutDockerAuth() BuildOption {
	return buildOptionFunc(func(o *buildOptions) error {
		o.noAuth = true
		return nil
	})
}

// Step is one vertex of the build graph as the daemon reported it: a
// Dockerfile instruction per platform ("[linux/arm64 2/3] RUN ..."), or
// an internal step ("[internal] load build definition from Dockerfile",
// "exporting to oci image format").
type Step struct {
	Digest    digest.Digest
	Name      string
	Cached    bool
	Error     string
	Started   *time.Time
	Completed *time.Time
}

// Duration is how long the step ran, 0 if it did not complete.
func (s Step) Duration() time.Duration {
	if s.Started == nil || s.Completed == nil {
		return 0
	}
	return s.Completed.Sub(*s.Started)
}

// Result is what a successful Build did.
type Result struct {
	// Digest is the image's digest (the index for several platforms), for
	// OCITarball and PushImage outputs; zero otherwise.
	Digest v1.Hash
	// Manifests maps "linux/arm64" to the platform's manifest digest, read
	// back from the OCITarball output or, without one, from the registry
	// PushImage pushed to.
	Manifests map[string]v1.Hash
	// Steps are the vertexes the daemon reported, in the order it first
	// reported them.
	Steps []Step
	// Total counts Steps; Cached counts those answered from the build
	// cache (the daemon's own, or an imported one).
	Total, Cached int
	// Warnings are the frontend's warnings (lint rules, deprecated syntax).
	Warnings []string
	// ExporterResponse is the daemon's raw answer ("containerimage.digest",
	// "cache.manifest", ...).
	ExporterResponse map[string]string
}

// CachedSteps names the steps that were cached.
func (r *Result) CachedSteps() []string {
	var out []string
	for _, s := range r.Steps {
		if s.Cached {
			out = append(out, s.Name)
		}
	}
	return out
}

// StepError is a build failure the daemon attributed to one step. Err is
// the daemon's error, with BuildKit's typed errors in its chain
// (*errdefs.VertexError, *errdefs.SolveError from
// github.com/moby/buildkit/solver/errdefs; *pb.ExitError from
// frontend/gateway/pb for a RUN that exited non-zero).
type StepError struct {
	Step     string        // `[linux/amd64 2/2] RUN ["/prog", "fail"]`
	Vertex   digest.Digest // the failing vertex
	Source   string        // "Dockerfile:3" when the daemon said where
	ExitCode int           // the RUN step's exit status; -1 if not a process exit
	Log      []byte        // the step's last output (at most 4 KiB)
	Err      error
}

func (e *StepError) Error() string {
	var b strings.Builder
	b.WriteString("buildkit: step ")
	b.WriteString(e.Step)
	if e.Source != "" {
		b.WriteString(" (" + e.Source + ")")
	}
	b.WriteString(" failed: ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *StepError) Unwrap() error { return e.Err }

// Build runs the dockerfile frontend on the daemon c is connected to,
// with contextDir as the build context, for every platform in one solve.
// Cache imports and exports, pinned base images, build arguments and
// outputs come from opts. It returns when the build and its exports are
// done. A failure the daemon pins on one step is a *StepError.
func Build(ctx context.Context, c *client.Client, contextDir string, opts ...BuildOption) (*Result, error) {
	o := buildOptions{dockerfileName: "Dockerfile"}
	for _, opt := range opts {
		if opt == nil {
			return nil, errors.New("buildkit: Build: nil option")
		}
		if err := opt.applyBuild(&o); err != nil {
			return nil, err
		}
	}
	if c == nil {
		return nil, errors.New("buildkit: Build: nil client")
	}
	if err := o.choosePlatforms(); err != nil {
		return nil, err
	}
	solveOpt, cleanup, err := o.solveOpt(contextDir)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	var disp *progressui.Display
	if o.progress != nil {
		d, err := progressui.NewDisplay(o.progress, o.progressMode)
		if err != nil {
			return nil, fmt.Errorf("buildkit: progress: %w", err)
		}
		disp = &d
	}

	rec := newRecorder()
	statusCh := make(chan *client.SolveStatus)
	var dispCh chan *client.SolveStatus
	var wg sync.WaitGroup
	if disp != nil {
		dispCh = make(chan *client.SolveStatus)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Not ctx: the display should finish printing, errors included.
			disp.UpdateFrom(context.WithoutCancel(ctx), dispCh)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for s := range statusCh {
			rec.add(s)
			if dispCh != nil {
				dispCh <- s
			}
		}
		if dispCh != nil {
			close(dispCh)
		}
	}()

	resp, err := c.Solve(ctx, nil, solveOpt, statusCh) // closes statusCh
	wg.Wait()
	if err != nil {
		return nil, rec.stepError(err)
	}
	for _, commit := range o.commits {
		if err := commit(); err != nil {
			return nil, err
		}
	}

	res := rec.result()
	res.ExporterResponse = resp.ExporterResponse
	if d := resp.ExporterResponse["containerimage.digest"]; d != "" {
		if h, err := v1.NewHash(d); err == nil {
			res.Digest = h
		}
	}
	if err := o.readManifests(ctx, res); err != nil {
		return res, err
	}
	return res, nil
}

// choosePlatforms sets o.platforms from WithPlatforms, else from the
// Pinned images, else to linux/amd64 and linux/arm64. The Pinned named
// contexts are keyed by platform, so a build for other platforms than
// they were pinned for would go to the registry for its base images:
// that is an error.
func (o *buildOptions) choosePlatforms() error {
	for _, p := range o.pin.platforms {
		o.platforms = append(o.platforms, platforms.Format(p))
	}
	if o.pinned == nil || len(o.pinned.Platforms) == 0 {
		if len(o.platforms) == 0 {
			o.platforms = defaultPlatforms()
		}
		return nil
	}
	if len(o.platforms) == 0 {
		o.platforms = slices.Clone(o.pinned.Platforms)
		return nil
	}
	for _, p := range o.platforms {
		if !slices.Contains(o.pinned.Platforms, p) {
			return fmt.Errorf("buildkit: Build for %s, but the base images were pinned for %s only", p, strings.Join(o.pinned.Platforms, ", "))
		}
	}
	return nil
}

// solveOpt turns the options into a SolveOpt. cleanup removes temp files.
func (o *buildOptions) solveOpt(contextDir string) (client.SolveOpt, func(), error) {
	var cleanups []func()
	cleanup := func() {
		for _, f := range slices.Backward(cleanups) {
			f()
		}
	}
	fail := func(err error) (client.SolveOpt, func(), error) {
		cleanup()
		return client.SolveOpt{}, func() {}, err
	}

	ctxFS, err := fsutil.NewFS(contextDir)
	if err != nil {
		return fail(fmt.Errorf("buildkit: build context %s: %w", contextDir, err))
	}

	dfPath := o.dockerfileName
	if !filepath.IsAbs(dfPath) {
		dfPath = filepath.Join(contextDir, dfPath)
	}
	dfDir, dfName := filepath.Dir(dfPath), filepath.Base(dfPath)
	dfBytes := o.dockerfile
	if o.pinned != nil && o.pinned.Dockerfile != nil {
		if dfBytes != nil {
			return fail(errors.New("buildkit: WithDockerfileBytes and a Pinned with a rewritten Dockerfile: use the Pinned one, made from those bytes"))
		}
		dfBytes = o.pinned.Dockerfile
	}
	if dfBytes != nil {
		tmp, err := os.MkdirTemp("", "buildcache-dockerfile-")
		if err != nil {
			return fail(err)
		}
		cleanups = append(cleanups, func() { os.RemoveAll(tmp) })
		if err := os.WriteFile(filepath.Join(tmp, dfName), dfBytes, 0o644); err != nil {
			return fail(err)
		}
		dfDir = tmp
	} else if _, err := os.Stat(dfPath); err != nil {
		return fail(fmt.Errorf("buildkit: Dockerfile: %w", err))
	}
	dfFS, err := fsutil.NewFS(dfDir)
	if err != nil {
		return fail(fmt.Errorf("buildkit: Dockerfile directory %s: %w", dfDir, err))
	}

	attrs := map[string]string{
		"platform": strings.Join(o.platforms, ","),
		"filename": dfName,
	}
	if o.pin.target != "" {
		attrs["target"] = o.pin.target
	}
	for k, v := range o.pin.buildArgs {
		attrs["build-arg:"+k] = v
	}
	stores := maps.Clone(o.ociStores)
	if stores == nil {
		stores = map[string]content.Store{}
	}
	if p := o.pinned; p != nil {
		for k, v := range p.FrontendAttrs {
			if old, ok := o.attrs[k]; ok && old != v {
				return fail(fmt.Errorf("buildkit: frontend attribute %q: WithFrontendAttr says %q, the Pinned images %q", k, old, v))
			}
			attrs[k] = v
		}
		for id, s := range p.OCIStores {
			if old, ok := stores[id]; ok && old != s {
				return fail(fmt.Errorf("buildkit: OCI store %q given twice", id))
			}
			stores[id] = s
		}
	}
	maps.Copy(attrs, o.attrs)

	var exports []client.ExportEntry
	for _, out := range o.outputs {
		e := client.ExportEntry{Type: out.typ, Attrs: maps.Clone(out.attrs)}
		switch out.typ {
		case client.ExporterOCI, client.ExporterDocker, client.ExporterTar:
			tf := &tarFile{path: out.path}
			cleanups = append(cleanups, tf.remove)
			o.commits = append(o.commits, tf.commit)
			e.Output = tf.create
		case client.ExporterLocal:
			e.OutputDir = out.path
		}
		exports = append(exports, e)
	}

	attach := slices.Clone(o.session)
	if !o.noAuth {
		cfg := dockerconfig.LoadDefaultConfigFile(io.Discard)
		attach = append(attach, authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
			AuthConfigProvider: authprovider.LoadAuthConfig(cfg),
		}))
	}

	opt := client.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": ctxFS, "dockerfile": dfFS},
		OCIStores:     stores,
		Exports:       exports,
		CacheImports:  cloneEntries(o.cacheImports),
		CacheExports:  cloneEntries(o.cacheExports),
		Session:       attach,
	}
	return opt, cleanup, nil
}

// tarFile is an exporter's tar output: written to a temp file next to
// path and renamed over it once the build succeeded.
type tarFile struct {
	path string
	mu   sync.Mutex
	tmp  string
}

func (t *tarFile) create(map[string]string) (io.WriteCloser, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tmp != "" {
		os.Remove(t.tmp)
	}
	f, err := os.CreateTemp(filepath.Dir(t.path), "."+filepath.Base(t.path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("buildkit: output %s: %w", t.path, err)
	}
	t.tmp = f.Name()
	return &syncedFile{f}, nil
}

func (t *tarFile) commit() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tmp == "" {
		return fmt.Errorf("buildkit: output %s: the daemon sent nothing", t.path)
	}
	if err := os.Rename(t.tmp, t.path); err != nil {
		return fmt.Errorf("buildkit: output %s: %w", t.path, err)
	}
	t.tmp = ""
	return nil
}

func (t *tarFile) remove() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tmp != "" {
		os.Remove(t.tmp)
		t.tmp = ""
	}
}

// syncedFile fsyncs before closing, so a renamed output is complete.
type syncedFile struct{ *os.File }

func (f *syncedFile) Close() error {
	err := f.File.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}

// readManifests fills res.Manifests from the first OCI tarball output, or
// else from the registry of the first pushed image.
func (o *buildOptions) readManifests(ctx context.Context, res *Result) error {
	for _, out := range o.outputs {
		if out.typ == client.ExporterOCI && out.attrs["tar"] != "false" {
			m, err := manifestsFromOCITar(out.path)
			if err != nil {
				return fmt.Errorf("buildkit: reading %s: %w", out.path, err)
			}
			res.Manifests = m
			return nil
		}
	}
	if res.Digest == (v1.Hash{}) {
		return nil
	}
	for _, out := range o.outputs {
		if out.typ == client.ExporterImage && out.attrs["push"] == "true" {
			m, err := manifestsFromRegistry(ctx, out, res.Digest)
			if err != nil {
				return fmt.Errorf("buildkit: reading back %s: %w", out.name, err)
			}
			res.Manifests = m
			return nil
		}
	}
	return nil
}

// maxJSONBlob bounds the manifests, indexes and configs read back.
const maxJSONBlob = 4 << 20

type ociNode struct {
	MediaType string          `json:"mediaType"`
	Manifests []v1.Descriptor `json:"manifests"`
	Config    *v1.Descriptor  `json:"config"`
	// config fields
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
}

// manifestsFromOCITar reads an OCI layout tarball's index.json and the
// index and manifests it reaches.
func manifestsFromOCITar(path string) (map[string]v1.Hash, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blobs := map[string][]byte{} // "index.json" or a hex digest
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg || h.Size > maxJSONBlob {
			continue
		}
		key := h.Name
		if hex, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok {
			key = hex
		} else if h.Name != "index.json" {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		blobs[key] = b
	}
	get := func(d v1.Hash, _ bool) ([]byte, error) {
		b, ok := blobs[d.Hex]
		if !ok || d.Algorithm != "sha256" {
			return nil, fmt.Errorf("blob %s is not in the tarball", d)
		}
		return b, nil
	}
	top, ok := blobs["index.json"]
	if !ok {
		return nil, errors.New("no index.json: not an OCI layout tarball")
	}
	return platformManifests(top, get)
}

func manifestsFromRegistry(ctx context.Context, out Output, d v1.Hash) (map[string]v1.Hash, error) {
	var nopts []name.Option
	if out.attrs["registry.insecure"] == "true" {
		nopts = append(nopts, name.Insecure)
	}
	ref, err := name.ParseReference(out.name, nopts...)
	if err != nil {
		return nil, err
	}
	repo := ref.Context()
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	get := func(h v1.Hash, config bool) ([]byte, error) {
		if !config {
			desc, err := remote.Get(repo.Digest(h.String()), ropts...)
			if err != nil {
				return nil, err
			}
			return desc.Manifest, nil
		}
		l, err := remote.Layer(repo.Digest(h.String()), ropts...)
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(io.LimitReader(rc, maxJSONBlob))
	}
	top, err := json.Marshal(v1.IndexManifest{Manifests: []v1.Descriptor{{Digest: d, MediaType: "application/vnd.oci.image.index.v1+json"}}})
	if err != nil {
		return nil, err
	}
	return platformManifests(top, get)
}

// platformManifests walks from an OCI layout's index.json (or any index)
// down to the image manifests and names each by its platform, taken from
// the index descriptor or, failing that, from the image config.
// Attestation manifests (platform unknown/unknown) are left out.
func platformManifests(top []byte, get func(d v1.Hash, config bool) ([]byte, error)) (map[string]v1.Hash, error) {
	out := map[string]v1.Hash{}
	var walk func(raw []byte, depth int) error
	walk = func(raw []byte, depth int) error {
		if depth > 4 {
			return errors.New("indexes nested too deep")
		}
		var n ociNode
		if err := json.Unmarshal(raw, &n); err != nil {
			return err
		}
		for _, desc := range n.Manifests {
			if desc.Annotations["vnd.docker.reference.type"] != "" {
				continue // an attestation manifest
			}
			b, err := get(desc.Digest, false)
			if err != nil {
				return err
			}
			var child ociNode
			if err := json.Unmarshal(b, &child); err != nil {
				return fmt.Errorf("%s: %w", desc.Digest, err)
			}
			if child.Config == nil { // an index
				if err := walk(b, depth+1); err != nil {
					return err
				}
				continue
			}
			p := desc.Platform
			if p == nil {
				cb, err := get(child.Config.Digest, true)
				if err != nil {
					return err
				}
				var cfg ociNode
				if err := json.Unmarshal(cb, &cfg); err != nil {
					return fmt.Errorf("config %s: %w", child.Config.Digest, err)
				}
				p = &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
			}
			if p.OS == "unknown" {
				continue
			}
			key := p.OS + "/" + p.Architecture
			if p.Variant != "" {
				key += "/" + p.Variant
			}
			out[key] = desc.Digest
		}
		return nil
	}
	if err := walk(top, 0); err != nil {
		return nil, err
	}
	return out, nil
}

// recorder collects the solve status: every vertex, and each vertex's
// last output.
type recorder struct {
	mu       sync.Mutex
	order    []digest.Digest
	steps    map[digest.Digest]*Step
	logs     map[digest.Digest]*bytes.Buffer
	warnings []string
}

// maxStepLog bounds the output kept per step for StepError.
const maxStepLog = 4 << 10

func newRecorder() *recorder {
	return &recorder{steps: map[digest.Digest]*Step{}, logs: map[digest.Digest]*bytes.Buffer{}}
}

func (r *recorder) add(s *client.SolveStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range s.Vertexes {
		st, ok := r.steps[v.Digest]
		if !ok {
			st = &Step{Digest: v.Digest}
			r.steps[v.Digest] = st
			r.order = append(r.order, v.Digest)
		}
		st.Name = v.Name
		st.Cached = st.Cached || v.Cached
		if v.Error != "" {
			st.Error = v.Error
		}
		if v.Started != nil {
			st.Started = v.Started
		}
		if v.Completed != nil {
			st.Completed = v.Completed
		}
	}
	for _, l := range s.Logs {
		b, ok := r.logs[l.Vertex]
		if !ok {
			b = &bytes.Buffer{}
			r.logs[l.Vertex] = b
		}
		b.Write(l.Data)
		if over := b.Len() - maxStepLog; over > 0 {
			b.Next(over)
		}
	}
	for _, w := range s.Warnings {
		r.warnings = append(r.warnings, string(w.Short))
	}
}

func (r *recorder) result() *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{Warnings: slices.Clone(r.warnings)}
	for _, d := range r.order {
		st := *r.steps[d]
		res.Steps = append(res.Steps, st)
		if st.Cached {
			res.Cached++
		}
	}
	res.Total = len(res.Steps)
	return res
}

// stepError names the failing step in err: the vertex the daemon's typed
// error points at or, without one, the step that reported an error.
func (r *recorder) stepError(err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var vtx digest.Digest
	var ve *solvererrdefs.VertexError
	if errors.As(err, &ve) && ve.Vertex != nil {
		vtx = digest.Digest(ve.Digest)
	}
	if _, ok := r.steps[vtx]; !ok {
		vtx = ""
		for _, d := range r.order {
			st := r.steps[d]
			if st.Error == "" || strings.Contains(st.Error, context.Canceled.Error()) {
				continue
			}
			vtx = d
			break
		}
	}
	var src string
	if srcs := solvererrdefs.Sources(err); len(srcs) > 0 {
		s := srcs[len(srcs)-1]
		if s.Info != nil && len(s.Ranges) > 0 && s.Ranges[0].Start != nil {
			src = fmt.Sprintf("%s:%d", s.Info.Filename, s.Ranges[0].Start.Line)
		}
	}
	if vtx == "" {
		if src != "" {
			return fmt.Errorf("buildkit: %s: %w", src, err)
		}
		return fmt.Errorf("buildkit: %w", err)
	}
	se := &StepError{Step: r.steps[vtx].Name, Vertex: vtx, Source: src, ExitCode: -1, Err: err}
	if b := r.logs[vtx]; b != nil {
		se.Log = slices.Clone(b.Bytes())
	}
	var exit *gatewaypb.ExitError
	if errors.As(err, &exit) {
		se.ExitCode = int(exit.ExitCode)
	}
	return se
}
