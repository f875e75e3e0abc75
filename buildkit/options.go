package buildkit

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/util/progress/progressui"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/buildcache/buildcache/cache"
)

// Option configures PinBaseImages and Build: one family for both calls,
// so that the options describing the build (WithPlatforms, WithBuildArgs,
// WithTarget, WithDockerfile) are written once and the same list serves
// the pin and the build of one Dockerfile:
//
//	opts := []buildkit.Option{buildkit.WithPlatforms("linux/amd64", "linux/arm64"), buildkit.WithTarget("app")}
//	pinned, err := buildkit.PinBaseImages(ctx, dockerfile, resolver, store, opts...)
//	res, err := buildkit.Build(ctx, c, dir, append(opts, buildkit.WithPinned(pinned))...)
//
// Each option says which call reads it; a call ignores the options that
// are only the other's (WithOutput means nothing to PinBaseImages,
// WithResolveOptions nothing to Build). A nil Option is an error.
type Option func(*options) error

type options struct {
	// Both calls.
	platforms      []ocispecs.Platform // WithPlatforms; none: each call's default
	buildArgs      map[string]string
	target         string
	dockerfileName string
	// PinBaseImages only.
	buildPlatform ocispecs.Platform
	mode          PinMode
	resolveOpts   []cache.ResolveOption
	storeID       string
	// Build only.
	dockerfile   []byte
	attrs        map[string]string
	pinned       *Pinned
	ociStores    map[string]content.Store
	cacheImports []client.CacheOptionsEntry
	cacheExports []client.CacheOptionsEntry
	outputs      []Output
	progress     io.Writer
	progressMode progressui.DisplayMode
	session      []session.Attachable
	noAuth       bool
}

// makeOptions applies opts over the defaults, which are set here and
// nowhere else.
func makeOptions(opts []Option) (*options, error) {
	o := &options{
		dockerfileName: "Dockerfile",
		buildPlatform:  platforms.Normalize(platforms.DefaultSpec()),
		storeID:        DefaultStoreID,
	}
	for _, opt := range opts {
		if opt == nil {
			return nil, errors.New("buildkit: nil Option")
		}
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// WithPlatforms sets the target platforms ("linux/amd64", "linux/arm64"),
// as the frontend's "platform" attribute lists them. Both calls. Default:
// PinBaseImages pins for the build platform alone, which is what BuildKit
// builds for when no platform is given; Build builds for the platforms
// the WithPinned images were pinned for, else for linux/amd64 and
// linux/arm64.
func WithPlatforms(ps ...string) Option {
	return func(o *options) error {
		if len(ps) == 0 {
			return errors.New("buildkit: WithPlatforms: no platform")
		}
		for _, s := range ps {
			p, err := platforms.Parse(s)
			if err != nil {
				return fmt.Errorf("buildkit: WithPlatforms(%q): %w", s, err)
			}
			p = platforms.Normalize(p)
			if !slices.ContainsFunc(o.platforms, func(q ocispecs.Platform) bool { return platforms.FormatAll(q) == platforms.FormatAll(p) }) {
				o.platforms = append(o.platforms, p)
			}
		}
		return nil
	}
}

// WithBuildArgs sets build args, as the frontend's "build-arg:" attributes
// do: they set ARGs declared before the first FROM (and override the
// automatic platform ARGs). Both calls. Default: none.
func WithBuildArgs(args map[string]string) Option {
	return func(o *options) error {
		o.buildArgs = maps.Clone(args)
		return nil
	}
}

// WithTarget builds only the named stage (the frontend's "target"
// attribute), and PinBaseImages pins only the images that stage needs.
// Both calls. Default: the last stage.
func WithTarget(stage string) Option {
	return func(o *options) error {
		if stage == "" {
			return errors.New("buildkit: WithTarget: empty stage name")
		}
		o.target = stage
		return nil
	}
}

// WithDockerfile names the Dockerfile: a path relative to the context
// directory, or an absolute one (default "Dockerfile" in the context).
// Both calls: Build reads it (unless WithDockerfileBytes or a RewriteFrom
// Pinned gives the bytes), and errors about its lines name it
// ("build/Dockerfile.prod:3: ...").
func WithDockerfile(path string) Option {
	return func(o *options) error {
		if path == "" {
			return errors.New("buildkit: WithDockerfile: empty path")
		}
		o.dockerfileName = path
		return nil
	}
}

// WithBuildPlatform sets the platform $BUILDPLATFORM names, which BuildKit
// takes from its worker. Default: this machine's platform, right when
// buildkitd runs on the same kind of machine as this process.
// PinBaseImages only.
func WithBuildPlatform(s string) Option {
	return func(o *options) error {
		p, err := platforms.Parse(s)
		if err != nil {
			return fmt.Errorf("buildkit: WithBuildPlatform(%q): %w", s, err)
		}
		o.buildPlatform = platforms.Normalize(p)
		return nil
	}
}

// WithMode chooses how the pinned images reach the build. PinBaseImages
// only (Build follows the mode of the WithPinned images). Default
// NamedContexts.
func WithMode(m PinMode) Option {
	return func(o *options) error {
		if m != NamedContexts && m != RewriteFrom {
			return fmt.Errorf("buildkit: WithMode(%v): unknown mode", m)
		}
		o.mode = m
		return nil
	}
}

// WithResolveOptions passes opts to every Resolve call (pull policy, max
// age, bypass). Platforms are not among them: PinBaseImages asks for
// exactly the platforms each image is needed for. PinBaseImages only.
func WithResolveOptions(opts ...cache.ResolveOption) Option {
	return func(o *options) error {
		ro, err := cache.MakeResolveOptions(opts...)
		if err != nil {
			return fmt.Errorf("buildkit: WithResolveOptions: %w", err)
		}
		if len(ro.Platforms) > 0 {
			return errors.New("buildkit: WithResolveOptions: platforms come from WithPlatforms and the Dockerfile, not cache.WithPlatforms")
		}
		o.resolveOpts = append(o.resolveOpts, opts...)
		return nil
	}
}

// WithStoreID names the OCI store in the named contexts and in
// Pinned.OCIStores (default DefaultStoreID). It must be a valid image
// repository name, and unique among the SolveOpt's OCIStores.
// PinBaseImages only (Build serves the stores of the WithPinned images).
func WithStoreID(id string) Option {
	return func(o *options) error {
		ref, err := reference.Parse(id + "@sha256:" + strings.Repeat("0", 64))
		if named, ok := ref.(reference.Named); err != nil || !ok || named.Name() != id {
			return fmt.Errorf("buildkit: WithStoreID(%q): not a valid lower-case repository name", id)
		}
		o.storeID = id
		return nil
	}
}
