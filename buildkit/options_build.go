package buildkit

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/util/progress/progressui"
)

// The options below are Build's only; PinBaseImages ignores them.

// WithDockerfileBytes builds from this Dockerfile instead of a file. Error
// messages call it by the WithDockerfile name, "Dockerfile" by default.
func WithDockerfileBytes(dockerfile []byte) Option {
	return func(o *options) error {
		if dockerfile == nil {
			return errors.New("buildkit: WithDockerfileBytes(nil)")
		}
		o.dockerfile = slices.Clone(dockerfile)
		return nil
	}
}

// WithFrontendAttr sets a dockerfile frontend attribute, e.g.
// ("no-cache", "") or ("context:alpine", "docker-image://alpine:3.20"). An
// attribute that WithPinned sets to another value is a conflict.
func WithFrontendAttr(key, value string) Option {
	return func(o *options) error {
		if key == "" {
			return errors.New("buildkit: WithFrontendAttr: empty key")
		}
		if o.attrs == nil {
			o.attrs = map[string]string{}
		}
		o.attrs[key] = value
		return nil
	}
}

// WithPinned takes base images from the store as PinBaseImages arranged:
// its frontend attributes (named contexts) and OCI stores are added to
// the build, and in RewriteFrom mode its rewritten Dockerfile replaces
// the one named by WithDockerfile. nil is allowed and does nothing.
func WithPinned(p *Pinned) Option {
	return func(o *options) error {
		o.pinned = p
		return nil
	}
}

// WithOCIStore serves an OCI content store to the daemon under id, for
// named contexts "oci-layout://<id>@sha256:...".
func WithOCIStore(id string, store content.Store) Option {
	return func(o *options) error {
		if id == "" || store == nil {
			return errors.New("buildkit: WithOCIStore: empty id or nil store")
		}
		if o.ociStores == nil {
			o.ociStores = map[string]content.Store{}
		}
		o.ociStores[id] = store
		return nil
	}
}

// WithCacheImports adds cache sources (--import-cache), e.g. the Imports
// of cacheentry.For's Entries.
func WithCacheImports(entries ...client.CacheOptionsEntry) Option {
	return func(o *options) error {
		o.cacheImports = append(o.cacheImports, cloneEntries(entries)...)
		return nil
	}
}

// WithCacheExports adds cache destinations (--export-cache).
func WithCacheExports(entries ...client.CacheOptionsEntry) Option {
	return func(o *options) error {
		o.cacheExports = append(o.cacheExports, cloneEntries(entries)...)
		return nil
	}
}

// WithCache adds both, as in WithCache(e.Imports, e.Exports) for a
// cacheentry.Entries e.
func WithCache(imports, exports []client.CacheOptionsEntry) Option {
	return func(o *options) error {
		o.cacheImports = append(o.cacheImports, cloneEntries(imports)...)
		o.cacheExports = append(o.cacheExports, cloneEntries(exports)...)
		return nil
	}
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
func WithOutput(outputs ...Output) Option {
	return func(o *options) error {
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
	}
}

// WithProgress shows the build's progress on w with BuildKit's progressui:
// mode "auto" (tty if w is a terminal, else plain), "tty", "plain",
// "rawjson" or "quiet". Default: nothing is shown.
func WithProgress(w io.Writer, mode string) Option {
	return func(o *options) error {
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
	}
}

// WithSession attaches more session services (secrets, SSH agents) to the
// build.
func WithSession(a ...session.Attachable) Option {
	return func(o *options) error {
		o.session = append(o.session, a...)
		return nil
	}
}

// WithoutDockerAuth does not attach the Docker config credentials that
// Build offers the daemon by default.
func WithoutDockerAuth() Option {
	return func(o *options) error {
		o.noAuth = true
		return nil
	}
}
