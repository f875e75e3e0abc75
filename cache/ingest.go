package cache

import (
	"context"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Ingester is implemented by a store that can take a blob in while the
// bytes written so far are read back by others, from the very file it
// will keep: a registry mirror streams a blob it downloads to its clients
// from the store's own temp file, so a blob is written to disk once, in
// the store (under its byte budget and free-space floor, swept like its
// other temp files after a crash), and what the clients read is what is
// committed. localfs implements it in its temp directory; a tier
// implements it on its near tier and copies the blob to the far tier once
// it is committed. A store without it is filled with Put.
type Ingester interface {
	// Ingest starts storing blob d of size bytes (-1: not known yet). The
	// bytes written count against the store's budget and free-space
	// floor as a Put's do: an Ingest that cannot fit fails with
	// ErrNoSpace before anything is written. The ingestion lives on ctx:
	// when ctx ends before Commit, it is aborted. A store that can ingest
	// only through what it wraps (a tier whose near tier cannot) fails
	// with errors.ErrUnsupported.
	Ingest(ctx context.Context, d v1.Hash, size int64) (Ingestion, error)
}

// Ingestion is one blob being stored by an Ingester. One goroutine writes
// it and commits it; any number read it meanwhile, and Close may come
// from any goroutine at any time.
type Ingestion interface {
	// Write appends bytes. It fails with ErrDigestMismatch past the size
	// given to Ingest and with ErrNoSpace when the store's budget or
	// free-space floor is reached; after an error the ingestion is dead
	// and only Close is left.
	io.Writer
	// ReadAt reads bytes already written (reading past them is an
	// error), concurrently with Write. It keeps working after Commit,
	// when it reads the committed blob (the same file), until Close.
	io.ReaderAt
	// Commit ends the writing: it checks that the bytes written are the
	// size given (if any) and hash to d, makes them durable and puts the
	// blob in place atomically, as Put does. On any error nothing is
	// stored and the ingestion is aborted.
	Commit(ctx context.Context) error
	// Close releases the ingestion. One not committed is aborted: its
	// bytes are removed and their room in the store returned, and
	// nothing is stored. Close may be called more than once.
	Close() error
}
