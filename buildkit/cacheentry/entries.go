package cacheentry

import (
	"errors"
	"fmt"
	"maps"

	"github.com/moby/buildkit/client"
)

// ErrUnsupportedCache: For was given a cache.LayerCache that has no
// BuildKit cache backend of the same layout.
var ErrUnsupportedCache = errors.New("no BuildKit cache backend for this cache")

// Entries are BuildKit cache imports and exports: put them in
// client.SolveOpt.CacheImports and CacheExports.
//
// BuildKit's client writes into the import entries' Attrs (a local
// import gets the digest its tag points to), so an entry used in one
// Solve must not be reused for the next: call For again, or Clone.
type Entries struct {
	Imports []client.CacheOptionsEntry
	Exports []client.CacheOptionsEntry
}

// Append returns e followed by more: BuildKit imports from every import
// (a local store and a shared bucket, say) and exports to every export.
func (e Entries) Append(more ...Entries) Entries {
	out := e.Clone()
	for _, m := range more {
		m = m.Clone()
		out.Imports = append(out.Imports, m.Imports...)
		out.Exports = append(out.Exports, m.Exports...)
	}
	return out
}

// Clone copies e, attribute maps included.
func (e Entries) Clone() Entries {
	clone := func(in []client.CacheOptionsEntry) []client.CacheOptionsEntry {
		if in == nil {
			return nil
		}
		out := make([]client.CacheOptionsEntry, len(in))
		for i, c := range in {
			out[i] = client.CacheOptionsEntry{Type: c.Type, Attrs: maps.Clone(c.Attrs)}
		}
		return out
	}
	return Entries{Imports: clone(e.Imports), Exports: clone(e.Exports)}
}

// Mode is how much of the build an export keeps.
type Mode int

const (
	// ModeMax exports every intermediate step, so a later build reuses
	// the steps of every stage: mode=max. The default.
	ModeMax Mode = iota
	// ModeMin exports only the steps of the final result: mode=min.
	ModeMin
)

func (m Mode) String() string {
	switch m {
	case ModeMax:
		return "max"
	case ModeMin:
		return "min"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}
