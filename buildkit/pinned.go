package buildkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	contentlocal "github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/buildcache/buildcache/buildkit/internal/dockerfile"
	"github.com/buildcache/buildcache/buildkit/internal/typednil"
	"github.com/buildcache/buildcache/cache"
)

// PinMode says how pinned base images reach the build.
type PinMode int

const (
	// NamedContexts hands each base image to the dockerfile frontend as a
	// named context (context:<image>::<platform>=oci-layout://<store>@<digest>)
	// served from the local store through the session: BuildKit never asks
	// the registry for it.
	NamedContexts PinMode = iota
	// RewriteFrom rewrites FROM lines to image@sha256:... . BuildKit still
	// fetches the image, but exactly the resolved one.
	RewriteFrom
)

func (m PinMode) String() string {
	switch m {
	case NamedContexts:
		return "named-contexts"
	case RewriteFrom:
		return "rewrite-from"
	}
	return fmt.Sprintf("PinMode(%d)", int(m))
}

// DefaultStoreID is the OCI store name the named contexts point at
// (oci-layout://buildcache@sha256:...) and the key of Pinned.OCIStores.
const DefaultStoreID = "buildcache"

// Errors of PinBaseImages. They come wrapped in a *LineError naming the
// Dockerfile line where it can.
var (
	// ErrInvalidDockerfile: the Dockerfile does not parse, names an
	// invalid image reference or an unknown target stage, or uses a
	// construct BuildKit rejects.
	ErrInvalidDockerfile = dockerfile.ErrInvalid
	// ErrUndefinedArg: a FROM uses a variable no ARG before the first FROM
	// declares, or expands to nothing. It is also ErrInvalidDockerfile.
	ErrUndefinedArg = dockerfile.ErrUndefinedArg
	// ErrPlatformNotFound: the resolved image has no manifest for a
	// platform the build needs.
	ErrPlatformNotFound = errors.New("image has no manifest for the platform")
	// ErrContextConflict: an image and a stage have the same context name,
	// so a named context for the image would replace the stage.
	ErrContextConflict = errors.New("named context would replace a stage")
)

// LineError is an error about one line of a Dockerfile. Its message starts
// with "Dockerfile:<line>:" as BuildKit's do, so a user can find the line;
// errors.Is and errors.As reach the error it wraps. File is "Dockerfile"
// unless WithDockerfile says otherwise; Line is 1-based, 0 if the error
// concerns no single line.
type LineError = dockerfile.LineError

// PinnedImage is one external base image of a Dockerfile resolved for one
// platform.
type PinnedImage struct {
	Ref      string  // as written in FROM, after ARG expansion
	Platform string  // "linux/arm64"
	Digest   v1.Hash // what the ref resolved to (index or manifest)
	Manifest v1.Hash // the platform's manifest digest
	Source   cache.Source
	// Stages are the stages using this image (in FROM, COPY --from or
	// RUN --mount from), by name or, if unnamed, by index.
	Stages []string
	// Line is the first Dockerfile line naming the image.
	Line int
	// ContextKey is the frontend attribute that pins it (NamedContexts
	// mode): "context:alpine::linux/arm64".
	ContextKey string
}

// Pinned is what a build needs to take its base images from the store.
type Pinned struct {
	Mode   PinMode
	Images []PinnedImage
	// FrontendAttrs are the "context:<name>::<platform>" attributes
	// (NamedContexts mode). Merge them into client.SolveOpt.FrontendAttrs.
	FrontendAttrs map[string]string
	// OCIStores goes into client.SolveOpt.OCIStores (NamedContexts mode).
	OCIStores map[string]content.Store
	// Dockerfile is the rewritten Dockerfile (RewriteFrom mode), else nil.
	Dockerfile []byte
	// Platforms are the target platforms pinned for, normalized
	// ("linux/amd64"). The dockerfile frontend's "platform" attribute must
	// list the same ones (or be unset if WithPlatforms was not given):
	// the context keys name them.
	Platforms []string
}

// LayoutStore is the capability PinBaseImages looks for (with cache.As)
// in the store the resolver keeps images in: its blobs, to check that
// everything the build reads is there, and its directory, an OCI image
// layout that BuildKit reads them from. A *localfs.Store is one; a
// *tier.Cache over one, or any wrapper that unwraps to one, has one.
type LayoutStore interface {
	cache.Getter
	cache.Stater
	Dir() string
}

// imageGroup is one external image (by normalized reference) and every use
// of it.
type imageGroup struct {
	named     reference.Named
	ref       string // as the first use wrote it, after ARG expansion
	line      int
	platforms []ocispecs.Platform
	uses      []dockerfile.Use
	res       *cache.ResolvedImage
}

func platformStrings(ps []ocispecs.Platform) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = platforms.Format(p)
	}
	return out
}

// PinBaseImages finds every external image the Dockerfile's build needs,
// for every platform it needs it for, resolves each through resolver (once,
// with all its platforms), and returns what the build needs so that
// BuildKit uses exactly those images: named contexts served from store
// (NamedContexts, the default) or a Dockerfile with digests in it
// (RewriteFrom).
//
// The Dockerfile is read as BuildKit v0.33.1's dockerfile frontend reads
// it: ARGs before the first FROM (with the automatic $BUILDPLATFORM,
// $TARGETPLATFORM, ... and WithBuildArgs), FROM --platform, stage names
// (FROM <stage> refers to an earlier stage; COPY --from and RUN --mount
// from=<stage> to any stage, in any case, or by index), scratch, and only
// the stages the target needs. An image is resolved for the target
// platforms, except under FROM --platform, which names its own platform
// ($BUILDPLATFORM: WithBuildPlatform).
//
// In NamedContexts mode, resolver must keep what it resolves in store
// (registry.NewResolver(store) does), and store must be or wrap a
// LayoutStore (a *localfs.Store, or a tier with one as its near tier):
// every manifest, config and layer the build will read is checked to be
// in that directory, which BuildKit reads. store may be nil in
// RewriteFrom mode.
//
// Errors name the Dockerfile line (*LineError) and keep the resolver's
// error in the chain: errors.Is(err, cache.ErrOffline) works.
func PinBaseImages(ctx context.Context, src []byte, resolver cache.BaseImageResolver, store cache.LayerCache, opts ...Option) (*Pinned, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return nil, err
	}
	if resolver == nil {
		return nil, errors.New("buildkit: PinBaseImages: nil resolver")
	}
	var layout LayoutStore
	if o.mode == NamedContexts {
		var ok bool
		if layout, ok = cache.As[LayoutStore](store); !ok || typednil.Is(layout) {
			return nil, fmt.Errorf("buildkit: PinBaseImages: NamedContexts needs the store the resolver keeps images in, in an OCI layout directory (a LayoutStore such as *localfs.Store, or a tier or wrapper over one); got %T", store)
		}
	}
	df, err := dockerfile.Parse(src, o.dockerfileName)
	if err != nil {
		return nil, err
	}

	targets := o.platforms
	if len(targets) == 0 {
		targets = []ocispecs.Platform{o.buildPlatform}
	}
	var groups []*imageGroup
	byRef := map[string]*imageGroup{}
	for _, tp := range targets {
		uses, err := df.Evaluate(dockerfile.Target{Platform: tp, BuildPlatform: o.buildPlatform, Stage: o.target, BuildArgs: o.buildArgs})
		if err != nil {
			return nil, err
		}
		for _, u := range uses {
			g := byRef[u.Named.String()]
			if g == nil {
				g = &imageGroup{named: u.Named, ref: u.Ref, line: u.Site.Line()}
				byRef[u.Named.String()] = g
				groups = append(groups, g)
			}
			g.uses = append(g.uses, u)
			if !slices.ContainsFunc(g.platforms, func(p ocispecs.Platform) bool { return platforms.Format(p) == platforms.Format(u.Platform) }) {
				g.platforms = append(g.platforms, u.Platform)
			}
		}
	}
	if o.mode == NamedContexts {
		if err := checkContextConflicts(df, groups); err != nil {
			return nil, err
		}
	}
	if err := resolveGroups(ctx, df, resolver, groups, o); err != nil {
		return nil, err
	}

	pinned := &Pinned{Mode: o.mode, Platforms: platformStrings(targets)}
	for _, g := range groups {
		for _, p := range g.platforms {
			m, err := manifestFor(df, g, p)
			if err != nil {
				return nil, err
			}
			img := PinnedImage{
				Ref: g.ref, Platform: platforms.Format(p), Digest: g.res.Digest, Manifest: m,
				Source: g.res.Source, Line: g.line,
			}
			for _, u := range g.uses {
				if platforms.Format(u.Platform) == img.Platform && !slices.Contains(img.Stages, u.Stage.Label()) {
					img.Stages = append(img.Stages, u.Stage.Label())
				}
			}
			if o.mode == NamedContexts {
				img.ContextKey = dockerfile.ContextKey(g.named, p)
			}
			pinned.Images = append(pinned.Images, img)
		}
	}

	switch o.mode {
	case NamedContexts:
		pinned.FrontendAttrs = map[string]string{}
		checked := map[v1.Hash]bool{}
		for _, img := range pinned.Images {
			if !checked[img.Manifest] {
				if err := checkStored(ctx, layout, img.Manifest); err != nil {
					return nil, &LineError{File: df.Name, Line: img.Line, Err: fmt.Errorf("%s for %s: %w (does the resolver keep images in this store?)", img.Ref, img.Platform, err)}
				}
				checked[img.Manifest] = true
			}
			pinned.FrontendAttrs[img.ContextKey] = "oci-layout://" + o.storeID + "@" + img.Manifest.String()
		}
		cs, err := contentlocal.NewStore(layout.Dir())
		if err != nil {
			return nil, fmt.Errorf("buildkit: opening %s as a content store: %w", layout.Dir(), err)
		}
		pinned.OCIStores = map[string]content.Store{o.storeID: readOnlyStore{cs}}
	case RewriteFrom:
		out, err := rewriteDockerfile(df, groups)
		if err != nil {
			return nil, err
		}
		pinned.Dockerfile = out
	}
	return pinned, nil
}

// checkContextConflicts refuses an image whose context name is also a
// stage's: the frontend looks every stage name up as a named context too,
// and a context found for it replaces the whole stage.
func checkContextConflicts(df *dockerfile.File, groups []*imageGroup) error {
	for _, g := range groups {
		name := dockerfile.ContextName(g.named)
		for _, st := range df.Stages {
			if st.Name == "" {
				continue
			}
			if sn, ok := dockerfile.StageContextName(st.Name); ok && sn == name {
				return &LineError{File: df.Name, Line: g.line, Err: fmt.Errorf("%w: image %q and stage %q (line %d) share the context name %q; rename the stage or use RewriteFrom",
					ErrContextConflict, g.ref, st.Name, st.From.Line(), name)}
			}
		}
	}
	return nil
}

// resolveGroups resolves every image once, with all its platforms, a few
// at a time. The error reported is the first image's in Dockerfile order,
// whatever finished first.
func resolveGroups(ctx context.Context, df *dockerfile.File, resolver cache.BaseImageResolver, groups []*imageGroup, o *options) error {
	errs := make([]error, len(groups))
	var eg errgroup.Group
	eg.SetLimit(4)
	for i, g := range groups {
		eg.Go(func() error {
			ps := platformStrings(g.platforms)
			opts := append(slices.Clone(o.resolveOpts), cache.WithPlatforms(ps...))
			res, err := resolver.Resolve(ctx, g.ref, opts...)
			if err == nil && res == nil {
				err = errors.New("resolver returned nothing")
			}
			if err != nil {
				errs[i] = &LineError{File: df.Name, Line: g.line, Err: fmt.Errorf("resolve %q for %s: %w", g.ref, strings.Join(ps, ", "), err)}
				return nil
			}
			g.res = res
			return nil
		})
	}
	eg.Wait()
	return firstErr(errs)
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// manifestFor is the manifest of g for platform p. A single-platform image
// serves every platform, as BuildKit uses it whatever the platform asked.
func manifestFor(df *dockerfile.File, g *imageGroup, p ocispecs.Platform) (v1.Hash, error) {
	ps := platforms.Format(p)
	if m, ok := g.res.Manifests[ps]; ok {
		return m, nil
	}
	if len(g.res.Manifests) == 1 {
		for _, m := range g.res.Manifests {
			if m == g.res.Digest {
				return m, nil
			}
		}
	}
	have := slices.Sorted(maps.Keys(g.res.Manifests))
	return v1.Hash{}, &LineError{File: df.Name, Line: g.line, Err: fmt.Errorf("%q resolved to %s: %w %s (it has %s)", g.ref, g.res.Digest, ErrPlatformNotFound, ps, strings.Join(have, ", "))}
}

// checkStored checks that the platform manifest m, its config and its
// layers are in store: everything BuildKit reads through an oci-layout
// context that points at a platform manifest. (The index is not read.)
func checkStored(ctx context.Context, store LayoutStore, m v1.Hash) error {
	rc, err := store.Get(ctx, m)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", m, err)
	}
	b, err := io.ReadAll(io.LimitReader(rc, cache.MaxManifestBytes+1))
	rc.Close()
	if err != nil {
		return fmt.Errorf("manifest %s: %w", m, err)
	}
	mf, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil || len(b) > cache.MaxManifestBytes {
		return fmt.Errorf("manifest %s is not an image manifest", m)
	}
	for _, d := range append([]v1.Descriptor{mf.Config}, mf.Layers...) {
		size, err := store.Stat(ctx, d.Digest)
		if err != nil {
			return fmt.Errorf("manifest %s: blob %s: %w", m, d.Digest, err)
		}
		if size != d.Size {
			return fmt.Errorf("manifest %s: blob %s has %d bytes in the store, the manifest says %d: %w", m, d.Digest, size, d.Size, cache.ErrCorrupt)
		}
	}
	return nil
}

// rewriteDockerfile appends each image's resolved digest to every place
// that names it, and checks that BuildKit's parser reads the result as the
// same Dockerfile with the digests added.
func rewriteDockerfile(df *dockerfile.File, groups []*imageGroup) ([]byte, error) {
	digests := map[*dockerfile.Site]string{}
	names := map[*dockerfile.Site]string{}
	for _, g := range groups {
		if _, ok := g.named.(reference.Digested); ok {
			continue // pinned already
		}
		for _, u := range g.uses {
			if prev, ok := names[u.Site]; ok && prev != g.named.String() {
				return nil, &LineError{File: df.Name, Line: u.Site.Line(), Err: fmt.Errorf("%q names a different image per platform (%s, %s): RewriteFrom cannot pin it, NamedContexts can",
					u.Site.Raw, prev, g.named.String())}
			}
			names[u.Site] = g.named.String()
			digests[u.Site] = g.res.Digest.String()
		}
	}
	return df.Rewrite(digests)
}

// errReadOnly refuses changes to the store through the session.
var errReadOnly = fmt.Errorf("buildcache: the store behind named contexts is read-only: %w", errdefs.ErrPermissionDenied)

// readOnlyStore serves the store's blobs to the daemon, which reads an
// oci-layout context with Info and ReaderAt only. The session would let
// the daemon write and delete too; nothing should, in a store shared with
// other builds and processes.
type readOnlyStore struct{ content.Store }

var _ content.Store = readOnlyStore{}

func (readOnlyStore) Delete(context.Context, digest.Digest) error { return errReadOnly }
func (readOnlyStore) Abort(context.Context, string) error         { return errReadOnly }
func (readOnlyStore) Update(context.Context, content.Info, ...string) (content.Info, error) {
	return content.Info{}, errReadOnly
}
func (readOnlyStore) Writer(context.Context, ...content.WriterOpt) (content.Writer, error) {
	return nil, errReadOnly
}
