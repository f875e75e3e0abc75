package cache

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// RootLookup is implemented by a RootIndex that can answer for one root
// without copying the whole index: a resolver's warm lookup then costs
// what a map lookup costs, whatever the number of roots.
type RootLookup interface {
	// Root returns the root whose AnnotationRefName is name, and whether
	// there is one. The descriptor is the caller's own copy.
	Root(ctx context.Context, name string) (v1.Descriptor, bool, error)
}

// RootRecorder is implemented by a RootIndex that can record one named
// root more cheaply than UpdateIndex rewrites the whole index.
type RootRecorder interface {
	// RecordRoot makes desc the root named by its AnnotationRefName,
	// replacing any root of that name. It returns once the record is
	// durable; when other tools reading the store see it is the
	// implementation's to document.
	RecordRoot(ctx context.Context, desc v1.Descriptor) error
}
