// Package rootindex holds the one in-memory cache.RootIndex, for stores
// that keep no index of their own: the resolver's fallback and a tier
// whose near tier has none.
package rootindex

import (
	"context"
	"slices"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// Memory is a cache.RootIndex kept in memory for the life of the value.
// The zero value is an empty index, ready to use; it must not be copied
// after first use.
type Memory struct {
	mu sync.Mutex
	im v1.IndexManifest
}

var _ cache.RootIndex = (*Memory)(nil)

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
	return nil
}

func (m *Memory) copy() *v1.IndexManifest {
	cp := m.im
	cp.Manifests = slices.Clone(m.im.Manifests)
	return &cp
}
