package buildkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/platforms"
	dockerconfig "github.com/docker/cli/cli/config"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/util/progress/progressui"
	digest "github.com/opencontainers/go-digest"
	"github.com/tonistiigi/fsutil"
)

// defaultPlatforms are what Build builds for when neither WithPlatforms
// nor a Pinned names platforms.
func defaultPlatforms() []string { return []string{"linux/amd64", "linux/arm64"} }

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
func Build(ctx context.Context, c *client.Client, contextDir string, opts ...Option) (*Result, error) {
	opt, err := makeOptions(opts)
	if err != nil {
		return nil, err
	}
	o := &buildRun{options: opt}
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

// buildRun is one Build: its options and what it works out from them.
type buildRun struct {
	*options
	targets []string       // the platforms built for (choosePlatforms)
	commits []func() error // run after a successful solve
}

// choosePlatforms sets o.targets from WithPlatforms, else from the
// Pinned images, else to linux/amd64 and linux/arm64. The Pinned named
// contexts are keyed by platform, so a build for other platforms than
// they were pinned for would go to the registry for its base images:
// that is an error.
func (o *buildRun) choosePlatforms() error {
	for _, p := range o.platforms {
		o.targets = append(o.targets, platforms.Format(p))
	}
	if o.pinned == nil || len(o.pinned.Platforms) == 0 {
		if len(o.targets) == 0 {
			o.targets = defaultPlatforms()
		}
		return nil
	}
	if len(o.targets) == 0 {
		o.targets = slices.Clone(o.pinned.Platforms)
		return nil
	}
	for _, p := range o.targets {
		if !slices.Contains(o.pinned.Platforms, p) {
			return fmt.Errorf("buildkit: Build for %s, but the base images were pinned for %s only", p, strings.Join(o.pinned.Platforms, ", "))
		}
	}
	return nil
}

// solveOpt turns the options into a SolveOpt. cleanup removes temp files.
func (o *buildRun) solveOpt(contextDir string) (client.SolveOpt, func(), error) {
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
		"platform": strings.Join(o.targets, ","),
		"filename": dfName,
	}
	if o.target != "" {
		attrs["target"] = o.target
	}
	for k, v := range o.buildArgs {
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
