// Package rootindex holds the one in-memory cache.RootIndex, for stores
// that keep no index of their own (the resolver's fallback, a tier whose
// near tier has none), and the one way to look up and record a named
// root in any cache.RootIndex.
package rootindex

import (
	"context"
	"maps"
	"slices"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// Lookup finds the root of ri whose cache.AnnotationRefName is name: one
// lookup when ri is a cache.RootLookup, else a scan of its index.
func Lookup(ctx context.Context, ri cache.RootIndex, name string) (v1.Descriptor, bool, error) {
	if rl, ok := ri.(cache.RootLookup); ok {
		return rl.Root(ctx, name)
	}
	im, err := ri.Index(ctx)
	if err != nil {
		return v1.Descriptor{}, false, err
	}
	for _, d := range im.Manifests {
		if d.Annotations[cache.AnnotationRefName] == name {
			return d, true, nil
		}
	}
	return v1.Descriptor{}, false, nil
}

// Record makes desc the root named by its cache.AnnotationRefName in ri,
// replacing any root of that name: through cache.RootRecorder when ri is
// one, else by an update of the whole index.
func Record(ctx context.Context, ri cache.RootIndex, desc v1.Descriptor) error {
	if rr, ok := ri.(cache.RootRecorder); ok {
		return rr.RecordRoot(ctx, desc)
	}
	return ri.UpdateIndex(ctx, func(im *v1.IndexManifest) error {
		replace(im, desc)
		return nil
	})
}

// replace puts desc in im in place of the root of the same name.
func replace(im *v1.IndexManifest, desc v1.Descriptor) {
	name := desc.Annotations[cache.AnnotationRefName]
	im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool {
		return d.Annotations[cache.AnnotationRefName] == name
	})
	im.Manifests = append(im.Manifests, desc)
}

// Memory is a cache.RootIndex kept in memory for the life of the value,
// with the one-root lookup and record of cache.RootLookup and
// cache.RootRecorder. The zero value is an empty index, ready to use; it
// must not be copied after first use.
type Memory struct {
	mu     sync.Mutex
	im     v1.IndexManifest
	byName map[string]int // position in im.Manifests; nil: to rebuild
}

var (
	_ cache.RootIndex    = (*Memory)(nil)
	_ cache.RootLookup   = (*Memory)(nil)
	_ cache.RootRecorder = (*Memory)(nil)
)

// Index returns a copy of the roots: the caller may change it freely.
func (m *Memory) Index(context.Context) (*v1.IndexManifest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.copy(), nil
}

// UpdateIndex applies fn to a copy of the roots and keeps the result only
// if fn succeeds, so a failed update changes nothing.
func (m *Memory) UpdateIndex(_ context.Context, fn func(*v1.IndexManifest) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := m.copy()
	if err := fn(cp); err != nil {
		return err
	}
	m.im = *cp
	m.byName = nil
	return nil
}

// Root implements cache.RootLookup.
func (m *Memory) Root(_ context.Context, name string) (v1.Descriptor, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.names()[name]
	if !ok {
		return v1.Descriptor{}, false, nil
	}
	return copyDesc(m.im.Manifests[i]), true, nil
}

// RecordRoot implements cache.RootRecorder.
func (m *Memory) RecordRoot(_ context.Context, desc v1.Descriptor) error {
	desc = copyDesc(desc)
	name := desc.Annotations[cache.AnnotationRefName]
	m.mu.Lock()
	defer m.mu.Unlock()
	names := m.names()
	if i, ok := names[name]; ok {
		m.im.Manifests[i] = desc
		return nil
	}
	names[name] = len(m.im.Manifests)
	m.im.Manifests = append(m.im.Manifests, desc)
	return nil
}

// names maps each root's name to its position, rebuilding the map after
// an UpdateIndex. A name that occurs twice (UpdateIndex may do that)
// maps to its last root.
func (m *Memory) names() map[string]int {
	if m.byName == nil {
		m.byName = make(map[string]int, len(m.im.Manifests))
		for i, d := range m.im.Manifests {
			if name, ok := d.Annotations[cache.AnnotationRefName]; ok {
				m.byName[name] = i
			}
		}
	}
	return m.byName
}

func (m *Memory) copy() *v1.IndexManifest {
	cp := m.im
	cp.Manifests = make([]v1.Descriptor, len(m.im.Manifests))
	for i, d := range m.im.Manifests {
		cp.Manifests[i] = copyDesc(d)
	}
	return &cp
}

// copyDesc copies what a caller might change in place: the annotations.
func copyDesc(d v1.Descriptor) v1.Descriptor {
	d.Annotations = maps.Clone(d.Annotations)
	return d
}
