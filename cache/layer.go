package cache

import (
	"context"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Stater reports the size of a stored blob, or ErrNotFound.
type Stater interface {
	Stat(ctx context.Context, d v1.Hash) (size int64, err error)
}

// Getter opens a stored blob for reading. The stream is verified while it
// is read: if the bytes do not match d, Read (or Close) fails with an error
// wrapping ErrCorrupt, and the entry is removed. A caller must treat what it
// has read as provisional until Read returns io.EOF.
type Getter interface {
	Get(ctx context.Context, d v1.Hash) (io.ReadCloser, error)
}

// Putter stores a blob. Put reads r to the end, verifies that it has size
// bytes (size < 0: not checked) and hashes to d, and stores it atomically:
// on any error nothing is stored. Put of a blob that is already stored
// succeeds, possibly without reading r.
type Putter interface {
	Put(ctx context.Context, d v1.Hash, size int64, r io.Reader) error
}

// Deleter removes a blob, or returns ErrNotFound.
type Deleter interface {
	Delete(ctx context.Context, d v1.Hash) error
}

// Walker calls fn for every stored blob, in no particular order. An error
// from fn stops the walk and is returned.
type Walker interface {
	Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error
}

// LayerCache is a content-addressed blob store. Every method validates its
// digest first and returns an error wrapping ErrInvalidDigest for a
// malformed one. Implementations are safe for concurrent use.
type LayerCache interface {
	Stater
	Getter
	Putter
	Deleter
	Walker
}

// StatsReporter is implemented by caches that count what they do.
type StatsReporter interface {
	Stats() Stats
}
