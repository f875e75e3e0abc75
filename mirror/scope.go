package mirror

import (
	"context"
	"encoding/json"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/flight"
)

// A store is addressed by digest alone, but a registry answers for a
// digest only under a repository that holds it: a blob of a private
// repository must not be readable through another name. So the mirror
// serves a stored blob, or a manifest by digest, under a name only when
// it knows that the name holds it there:
//
//   - a manifest the mirror served under the name (by tag, or by a
//     digest it knew) references it, or is it; a normal pull asks for
//     the tag first, so every later request of the pull is known and
//     costs no upstream request;
//   - or the upstream said so: one HEAD under the client's name, shared
//     by concurrent requests, its answer remembered;
//   - or, when the upstream cannot answer, the store's roots say so: an
//     image a tag of that repository was resolved to references it.
//
// What the mirror knows is a bounded set of (repository, digest) pairs in
// memory (scopeGeneration pairs in each of two generations, about 200
// bytes a pair): a pair not asked for while a generation filled is
// forgotten, and costs one HEAD, or one walk of the repository's roots,
// when it is asked for again.

// scopeGeneration bounds the pairs of one generation of a scope.
const scopeGeneration = 1 << 16

// maxScopeWalk bounds the stored manifests read to learn one repository's
// digests from its roots.
const maxScopeWalk = 1024

// scope is the set of digests each repository is known to hold. The zero
// value is empty and ready.
type scope struct {
	confirms flight.Group[string, struct{}] // "repo@digest": one upstream HEAD at a time
	walks    flight.Group[string, struct{}] // repo: one walk of its roots at a time

	mu       sync.Mutex
	cur, old map[string]struct{} // "repo@digest"; a hit in old moves to cur
	walked   map[string]uint64   // repo -> the tagView generation its roots were walked at
}

func scopeKey(repo string, d v1.Hash) string { return repo + "@" + d.String() }

func (s *scope) has(repo string, d v1.Hash) bool {
	k := scopeKey(repo, d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cur[k]; ok {
		return true
	}
	if _, ok := s.old[k]; ok {
		s.addLocked(k)
		return true
	}
	return false
}

func (s *scope) add(repo string, ds ...v1.Hash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range ds {
		s.addLocked(scopeKey(repo, d))
	}
}

func (s *scope) addLocked(k string) {
	if len(s.cur) >= scopeGeneration || s.cur == nil {
		s.old, s.cur = s.cur, make(map[string]struct{}, min(len(s.cur), scopeGeneration))
	}
	s.cur[k] = struct{}{}
}

// walkDue reports whether repo's roots, at tagView generation gen, are
// still to be walked, and marks them walked.
func (s *scope) walkDue(repo string, gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.walked[repo] == gen {
		return false
	}
	if s.walked == nil || len(s.walked) >= scopeGeneration {
		s.walked = map[string]uint64{}
	}
	s.walked[repo] = gen
	return true
}

// inScope returns nil when d may be served under repo ("host/name"), and
// otherwise the upstream's answer: a refusal (404, 401, 403) or, when it
// could not answer and the store's roots do not place d in repo either,
// its failure.
func (m *Mirror) inScope(ctx context.Context, repo string, d v1.Hash, manifest bool) error {
	if m.scope.has(repo, d) {
		return nil
	}
	if m.ctx.Err() != nil {
		return ErrClosed // a closed mirror asks its upstream nothing more
	}
	_, _, err := m.scope.confirms.Do(ctx, scopeKey(repo, d), func(ctx context.Context) (struct{}, error) {
		var err error
		if manifest {
			_, err = m.up.HeadManifest(ctx, repo, d)
		} else {
			var desc v1.Descriptor
			desc, err = m.up.HeadBlob(ctx, repo, d)
			if err == nil {
				m.sizes.add(repo, d, desc.Size) // bounds its download
			}
		}
		switch {
		case err == nil:
			m.scope.add(repo, d)
			return struct{}{}, nil
		case !upstreamDown(err):
			return struct{}{}, err
		}
		m.walkRoots(ctx, repo)
		if m.scope.has(repo, d) {
			return struct{}{}, nil
		}
		return struct{}{}, err
	})
	return err
}

// noteManifest records that manifest d, served under repo as raw, and
// what it references (an image's config and layers, an index's
// manifests) belong to repo, and the sizes it gives its blobs (blobSizes).
func (m *Mirror) noteManifest(repo string, d v1.Hash, raw []byte) {
	refs := references(raw)
	ds := make([]v1.Hash, 0, len(refs)+1)
	for _, r := range refs {
		ds = append(ds, r.Digest)
		if !r.manifest {
			m.sizes.add(repo, r.Digest, r.Size)
		}
	}
	m.scope.add(repo, append(ds, d)...)
}

// reference is a digest a manifest names, with the size it gives it.
type reference struct {
	v1.Descriptor
	manifest bool // an index's entry, not a blob
}

// references are the digests a manifest or index names: an index's
// manifests, an image's config and layers. A digest that is not well
// formed is left out.
func references(raw []byte) []reference {
	type desc struct {
		Digest string
		Size   int64
	}
	var mf struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Manifests []desc `json:"manifests"`
	}
	if json.Unmarshal(raw, &mf) != nil {
		return nil
	}
	var rs []reference
	add := func(d desc, manifest bool) {
		if h, err := cache.ParseContentDigest(d.Digest); err == nil {
			rs = append(rs, reference{Descriptor: v1.Descriptor{Digest: h, Size: d.Size}, manifest: manifest})
		}
	}
	if mf.Config != nil {
		add(*mf.Config, false)
	}
	for _, l := range mf.Layers {
		add(l, false)
	}
	for _, c := range mf.Manifests {
		add(c, true)
	}
	return rs
}

// walkRoots learns what the store's roots of repo's tags reach: their top
// manifests and, for an index, the platform manifests stored, and what
// each references. It reads at most maxScopeWalk manifests, and walks a
// repository once per tagView generation: while the upstream is down,
// requests for digests the roots do not reach cost no more reads.
func (m *Mirror) walkRoots(ctx context.Context, repo string) {
	_, _, _ = m.scope.walks.Do(ctx, repo, func(ctx context.Context) (struct{}, error) {
		tops, gen, err := m.tags.of(ctx, m.store, repo)
		if err != nil || !m.scope.walkDue(repo, gen) {
			return struct{}{}, err
		}
		budget := maxScopeWalk
		for _, top := range tops {
			if budget <= 0 {
				break
			}
			budget--
			raw, err := m.readManifest(ctx, top)
			if err != nil {
				continue
			}
			m.noteManifest(repo, top, raw)
			if !mediaTypeOf(raw).IsIndex() {
				continue
			}
			for _, r := range references(raw) {
				child := r.Digest
				if budget <= 0 {
					break
				}
				budget--
				if craw, err := m.readManifest(ctx, child); err == nil {
					m.noteManifest(repo, child, craw)
				}
			}
		}
		return struct{}{}, nil
	})
}
