// Package memo is a bounded map for what a process remembers to save
// work it can always do again (a read of manifests, a request): when
// full it starts over, so its memory is bounded and forgetting costs
// one repetition of the work per key.
package memo

import "sync"

// Map is a memo of at most Max entries (0: unbounded). The zero value
// is empty and ready to use; it is safe for concurrent use and must not
// be copied after first use.
type Map[K comparable, V any] struct {
	Max int

	mu sync.Mutex
	m  map[K]V
}

// Get returns what is remembered of k.
func (m *Map[K, V]) Get(k K) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[k]
	return v, ok
}

// Put remembers v for k, forgetting everything else first if the memo
// is full.
func (m *Map[K, V]) Put(k K, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || m.Max > 0 && len(m.m) >= m.Max {
		m.m = make(map[K]V)
	}
	m.m[k] = v
}

// Delete forgets k.
func (m *Map[K, V]) Delete(k K) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, k)
}
