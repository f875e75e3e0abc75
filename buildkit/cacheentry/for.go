package cacheentry

import (
	"errors"
	"fmt"

	"github.com/buildcache/buildcache/buildkit/internal/typednil"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/s3/s3loc"
)

// The capabilities For looks for. A cache need not be one of this
// module's types to have a BuildKit counterpart, only to say where its
// bytes are; For finds each with cache.As, so a wrapper that unwraps to
// such a cache maps as the cache does.
type (
	// LayoutDir is a cache kept in an OCI image layout directory that
	// BuildKit's client can write into (*localfs.Store).
	LayoutDir interface{ Dir() string }
	// RegistryRepository is a cache in a registry repository (the
	// repository-backed *ocirepo.Cache), which keeps its own index at
	// IndexTag and talks plain HTTP when Insecure.
	RegistryRepository interface {
		Repository() string
		Insecure() bool
		IndexTag() string
	}
	// S3Located is a cache in an S3 bucket (*s3.Cache), laid out as
	// BuildKit's type=s3 cache lays out its objects.
	S3Located interface{ Location() s3loc.Location }
)

// For maps a cache to BuildKit cache entries over the same storage,
// so BuildKit and Go code share one cache and nothing is copied. It goes
// by what the cache can tell (the capabilities above), not by its type,
// and looks through wrappers with cache.As:
//
//   - cache.Tiered (*tier.Cache), looked for first: the near tier's
//     entries followed by the far tier's. BuildKit imports from every
//     import and exports to every export, so a build reads the local
//     directory first, then the shared bucket or repository, and writes
//     both, as the tier does. A tier with a BuildKit counterpart on one
//     side only (a memory near tier, say) gives that side's entries.
//   - S3Located (*s3.Cache): type=s3 with the bucket, region, endpoint
//     and key prefixes of the cache, so BuildKit's blobs are at the
//     cache's blob keys.
//   - RegistryRepository (the repository-backed LayerCache):
//     type=registry on the repository (or the one WithRepository names),
//     plain HTTP when the cache uses it, at a tag other than its index
//     tag. BuildKit's blobs go in the same repository but are not in the
//     cache's index.
//   - LayoutDir (*localfs.Store): type=local on the directory (an OCI
//     image layout: BuildKit's cache blobs land in blobs/sha256 beside
//     ours and its cache manifest is tagged in index.json, so localfs GC
//     keeps it).
//
// Any other cache is ErrUnsupportedCache. For makes no request.
func For(c cache.LayerCache, opts ...Option) (Entries, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return Entries{}, err
	}
	if typednil.Is(c) {
		return Entries{}, fmt.Errorf("cacheentry: For: nil cache: %w", ErrUnsupportedCache)
	}
	return forCache(c, o)
}

func forCache(c cache.LayerCache, o *options) (Entries, error) {
	// A tier is looked at first: through Unwrap, As would find its near
	// tier's capabilities, but BuildKit should use both tiers.
	if t, ok := cache.As[cache.Tiered](c); ok {
		return tierEntries(t, o)
	}
	if l, ok := cache.As[S3Located](c); ok {
		return s3Entries(l.Location(), o)
	}
	if r, ok := cache.As[RegistryRepository](c); ok {
		oo := *o // WithRepository and the insecure default are per cache
		if oo.repository == "" {
			oo.repository = r.Repository()
		}
		if r.Insecure() {
			oo.insecure = true
		}
		if oo.nameOr(DefaultRegistryTag) == r.IndexTag() {
			return Entries{}, fmt.Errorf("cacheentry: For: cache name %q is the tag where the repository cache keeps its index; BuildKit would overwrite it", r.IndexTag())
		}
		return registryEntries(oo.repository, &oo)
	}
	if d, ok := cache.As[LayoutDir](c); ok {
		if _, ok := o.attrs["reset"]; ok {
			return Entries{}, errors.New("cacheentry: For: reset is refused for a localfs store: BuildKit would delete every blob index.json does not reach, and the store keeps more than BuildKit's cache")
		}
		return localEntries(d.Dir(), o)
	}
	return Entries{}, fmt.Errorf("cacheentry: For: %T: %w (want a cache with Dir, Repository or Location: *localfs.Store, a repository LayerCache, *s3.Cache, or a *tier.Cache of them)", c, ErrUnsupportedCache)
}

// tierEntries is the near tier's entries, then the far tier's. A tier
// BuildKit has no counterpart for is left out; if neither has one, the
// tier has none.
func tierEntries(t cache.Tiered, o *options) (Entries, error) {
	var out Entries
	found := false
	for _, c := range []cache.LayerCache{t.Near(), t.Far()} {
		if typednil.Is(c) {
			continue
		}
		e, err := forCache(c, o)
		if errors.Is(err, ErrUnsupportedCache) {
			continue
		}
		if err != nil {
			return Entries{}, err
		}
		out, found = out.Append(e), true
	}
	if !found {
		return Entries{}, fmt.Errorf("cacheentry: For: %T: %w: neither tier (%T, %T) has a BuildKit cache backend", t, ErrUnsupportedCache, t.Near(), t.Far())
	}
	return out, nil
}
