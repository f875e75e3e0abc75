package imagewalk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// Store is what Measure reads: blobs by digest, with no network.
type Store interface {
	cache.Stater
	cache.Getter
}

// Footprint is what one image occupies in a store.
type Footprint struct {
	Platforms []string // the platforms whose manifests are stored, as Walk names them
	Blobs     int      // distinct blobs stored: indexes, manifests, configs, layers
	Bytes     int64    // their size
	Missing   int      // blobs that stored manifests reference but that are absent
	Err       error    // the first manifest or config that could not be read or walked
}

// Check says why the image named ref is not usable from the store: Err,
// or an error wrapping cache.ErrNotFound when blobs are missing; nil when
// it is complete.
func (fp Footprint) Check(ref string) error {
	if fp.Err != nil {
		return fmt.Errorf("%s: %w", ref, fp.Err)
	}
	if fp.Missing > 0 {
		return fmt.Errorf("%s: %d blobs are not in the cache: %w", ref, fp.Missing, cache.ErrNotFound)
	}
	return nil
}

// Measure walks the image whose index or manifest is top in store, as
// Walk does (attestations and artifacts left out, nested indexes
// followed), and counts each blob it reaches once.
//
// With manifests (a cache.ResolvedImage's Manifests), it counts only
// those platform manifests of an index, and one that is absent is
// missing. With none, it counts every image manifest of the index that is
// stored: an absent one is a platform nobody asked for, not missing.
// Configs and layers of the counted manifests are always required. A
// top-level image manifest is counted whatever manifests says.
func Measure(ctx context.Context, store Store, top v1.Hash, manifests map[string]v1.Hash) Footprint {
	m := &measure{ctx: ctx, store: store, seen: map[v1.Hash]bool{}}
	if !m.count(top, true) {
		return m.fp
	}
	raw, err := m.read(v1.Descriptor{Digest: top})
	if err != nil {
		m.fail(err)
		return m.fp
	}
	var wanted map[v1.Hash]bool
	if manifests != nil {
		wanted = make(map[v1.Hash]bool, len(manifests))
		for _, d := range manifests {
			wanted[d] = true
		}
	}
	found, err := Walk(raw, top, nil, func(desc v1.Descriptor, config bool) ([]byte, error) {
		if !config {
			if wanted != nil && !wanted[desc.Digest] {
				return nil, ErrSkip
			}
			if !m.count(desc.Digest, wanted != nil) {
				return nil, ErrSkip
			}
		} else if !m.count(desc.Digest, true) {
			return nil, fmt.Errorf("config %s: %w", desc.Digest, cache.ErrNotFound)
		}
		return m.read(desc)
	})
	if err != nil {
		m.fail(err)
		return m.fp
	}
	for _, man := range found {
		var parts struct {
			Config v1.Descriptor   `json:"config"`
			Layers []v1.Descriptor `json:"layers"`
		}
		if err := json.Unmarshal(man.Raw, &parts); err != nil {
			m.fail(fmt.Errorf("manifest %s: %w", man.Descriptor.Digest, err))
			continue
		}
		for _, d := range append([]v1.Descriptor{parts.Config}, parts.Layers...) {
			if err := cache.ValidateDigest(d.Digest); err != nil {
				m.fail(fmt.Errorf("manifest %s: %w", man.Descriptor.Digest, err))
				continue
			}
			m.count(d.Digest, true)
		}
		if man.Platform != "unknown" {
			m.fp.Platforms = append(m.fp.Platforms, man.Platform)
		}
	}
	return m.fp
}

// measure is one Measure's state; Walk may call its getter from several
// goroutines.
type measure struct {
	ctx   context.Context
	store Store
	mu    sync.Mutex
	seen  map[v1.Hash]bool // digest -> stored
	fp    Footprint
}

// count stats d once and reports whether it is stored; an absent d is
// missing when required says so.
func (m *measure) count(d v1.Hash, required bool) bool {
	m.mu.Lock()
	stored, ok := m.seen[d]
	m.mu.Unlock()
	if ok {
		return stored
	}
	size, err := m.store.Stat(m.ctx, d)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.seen[d]; ok {
		return m.seen[d]
	}
	m.seen[d] = err == nil
	switch {
	case err == nil:
		m.fp.Blobs++
		m.fp.Bytes += size
	case !errors.Is(err, cache.ErrNotFound):
		m.failLocked(err)
	case required:
		m.fp.Missing++
	}
	return err == nil
}

// read reads a manifest, an index or a config, verified by the store's
// reader (which it reads to its end), at most desc.Size bytes when stated
// and cache.MaxManifestBytes in any case.
func (m *measure) read(desc v1.Descriptor) ([]byte, error) {
	limit := int64(cache.MaxManifestBytes)
	if desc.Size > 0 {
		limit = min(limit, desc.Size)
	}
	rc, err := m.store.Get(m.ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", desc.Digest, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", desc.Digest, limit)
	}
	return b, nil
}

func (m *measure) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failLocked(err)
}

func (m *measure) failLocked(err error) {
	if m.fp.Err == nil {
		m.fp.Err = err
	}
}
