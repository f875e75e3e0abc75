package cache

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// RootIndex is implemented by stores that keep a list of roots: named
// descriptors (an OCI image layout's index.json) that garbage collection
// keeps, with everything they reference. A resolver records which digest a
// tag pointed to, and when it last checked, as a root.
type RootIndex interface {
	// Index returns the current roots.
	Index(ctx context.Context) (*v1.IndexManifest, error)
	// UpdateIndex changes the roots atomically: fn sees the current index
	// and edits it; if fn fails nothing changes. Concurrent updates, also
	// from other processes sharing the store, are serialised.
	UpdateIndex(ctx context.Context, fn func(*v1.IndexManifest) error) error
}

// Annotations a resolver writes on the roots it records.
const (
	// AnnotationRefName is the OCI annotation naming a root; buildcache
	// writes the fully qualified reference ("index.docker.io/library/golang:1.22").
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationResolvedAt is when the reference was last resolved or
	// revalidated against its registry, in RFC 3339 format.
	AnnotationResolvedAt = "dev.buildcache.resolved-at"
	// AnnotationSubject marks a root that holds what describes another
	// image (its signatures, attestations, SBOMs: its referrers, or the
	// tags cosign names after it, "sha256-<hex>.sig"): the digest of that
	// image, the subject. Such a root is kept while its subject is: a
	// collector keeps it only when the other roots reach the subject, and
	// a resolver's Prune drops it with the subject's last root.
	AnnotationSubject = "dev.buildcache.subject"
)
