package mirror

import (
	"context"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/flight"
)

// tagViewMaxAge is how long a tagView built from the store's roots is
// used before it is built again: roots that other processes record, or
// that Prune drops, show within this time. The mirror's own tags show at
// once (note).
const tagViewMaxAge = time.Minute

// tagView is what the store's roots say each repository's tags point to:
// the resolver records every tag it resolves as a root named
// "host/name:tag". The mirror reads it only when the upstream cannot
// answer, for the tag list and for the digests a repository may be
// served (scope.go). Building it costs one copy of the store's index,
// about 10 ms for 10,000 roots (BenchmarkTagViewBuild), at most once per
// tagViewMaxAge whatever the number of requests; a lookup then costs a
// map lookup (5 µs, most of it parsing the name).
type tagView struct {
	now    func() time.Time
	builds flight.Group[struct{}, struct{}]

	mu    sync.Mutex
	built time.Time                     // when repos was read; zero: never
	gen   uint64                        // grows whenever repos changes
	repos map[string]map[string]v1.Hash // repository (repoKey) -> tag -> digest
}

// repoKey names a repository ("host/name") as the resolver's roots do,
// go-containerregistry's normalised form; "" for a name it cannot parse.
func repoKey(repo string) string {
	r, err := name.NewRepository(repo)
	if err != nil {
		return ""
	}
	return r.Name()
}

// of returns repo's tags as the store's roots record them, and the
// view's generation, building the view first if it is missing or old.
func (v *tagView) of(ctx context.Context, store cache.LayerCache, repo string) (map[string]v1.Hash, uint64, error) {
	v.mu.Lock()
	fresh := v.repos != nil && v.now().Sub(v.built) < tagViewMaxAge
	v.mu.Unlock()
	if !fresh {
		if _, _, err := v.builds.Do(ctx, struct{}{}, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, v.build(ctx, store)
		}); err != nil {
			return nil, 0, err
		}
	}
	k := repoKey(repo)
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.repos[k]), v.gen, nil
}

// build reads the store's roots into the view. A store that keeps none
// (no cache.RootIndex) has no tags.
func (v *tagView) build(ctx context.Context, store cache.LayerCache) error {
	repos := map[string]map[string]v1.Hash{}
	at := v.now()
	if ri, ok := cache.As[cache.RootIndex](store); ok {
		im, err := ri.Index(ctx)
		if err != nil {
			return err
		}
		for _, d := range im.Manifests {
			k, tag, ok := splitRef(d.Annotations[cache.AnnotationRefName])
			if !ok {
				continue // not a resolver's root: by digest, or a bare tag another tool wrote
			}
			if repos[k] == nil {
				repos[k] = map[string]v1.Hash{}
			}
			repos[k][tag] = d.Digest
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.repos, v.built = repos, at
	v.gen++
	return nil
}

// splitRef splits a root's name as the resolver writes it, the
// normalised "host/name:tag" (repoKey's form, so it is not parsed again:
// that would cost more than the rest of a build), into repository and tag.
func splitRef(ref string) (repo, tag string, ok bool) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.IndexByte(ref[i:], '/') >= 0 || !strings.Contains(ref[:i], "/") || strings.Contains(ref, "@") {
		return "", "", false
	}
	return ref[:i], ref[i+1:], i+1 < len(ref)
}

// note records that the mirror served repo's tag as d, so that the view
// shows it before it is next built. Until the view is first built (the
// upstream has not failed) it costs a lock and nothing else.
func (v *tagView) note(repo, tag string, d v1.Hash) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.repos == nil {
		return
	}
	k := repoKey(repo)
	if k == "" || v.repos[k][tag] == d {
		return
	}
	if v.repos[k] == nil {
		v.repos[k] = map[string]v1.Hash{}
	}
	v.repos[k][tag] = d
	v.gen++
}
