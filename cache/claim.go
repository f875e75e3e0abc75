package cache

import (
	"context"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// RevalidationClaimer is implemented by a store whose roots several
// processes share (an s3.Cache's records in its bucket; a tier.Cache
// over such a far tier), so that a reference costs one request to its
// registry per max age across all of them, however many ask. A resolver
// that is about to revalidate a recorded reference (its record is older
// than the max age), or to pull one it has no record of, asks first.
type RevalidationClaimer interface {
	// ClaimRevalidation returns what the shared store knows of the root
	// named name and whether the caller is to ask the registry.
	//
	// Claimed: the caller revalidates (or pulls), and its RecordRoot of
	// name ends the claim; release ends it without a record (the
	// registry failed). A claim left alone (its process died) expires
	// after a short time, and release may be called more than once.
	//
	// Not claimed: Root (when Found) was checked within maxAge by some
	// process (its AnnotationResolvedAt says when), or another process
	// is revalidating it now (Busy): the caller serves Root without a
	// request. A caller without a copy of any root for name waits,
	// within ctx, while another process pulls it.
	ClaimRevalidation(ctx context.Context, name string, maxAge time.Duration) (claim RevalidationClaim, release func(), err error)
}

// RevalidationClaim is a RevalidationClaimer's answer.
type RevalidationClaim struct {
	Root    v1.Descriptor // the shared root of the name, when Found
	Found   bool
	Claimed bool // the caller is to ask the registry
	Busy    bool // not claimed because another process is asking it now
	// Shared is whether the answer comes from records that other
	// processes share. A store that could not ask them (a tier whose far
	// tier keeps none, or is down) answers Claimed and not Shared: the
	// caller goes on as if it had not asked.
	Shared bool
}
