package mirror

import (
	"context"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/registry"
)

// Upstream is where a Mirror gets what it serves: a *registry.Resolver.
// The mirror serves from Store and asks the upstream for what Store
// lacks, so the two cannot disagree: what the upstream fetches is in the
// store the mirror reads.
type Upstream interface {
	// Store is where the upstream keeps what it fetches, and what the
	// mirror serves from (registry.Resolver.Store).
	Store() cache.LayerCache
	// ResolveTop resolves a tag ("host/name:tag") to its top manifest,
	// which it stores, revalidated as often as maxAge says
	// (registry.Resolver.ResolveTop).
	ResolveTop(ctx context.Context, ref string, maxAge time.Duration) (*registry.TopManifest, error)
	// FetchManifest makes sure manifest d of repo ("host/name") is
	// stored, and describes it (registry.Resolver.FetchManifest).
	FetchManifest(ctx context.Context, repo string, d v1.Hash) (v1.Descriptor, error)
	// StreamBlob makes sure blob d of repo, of size bytes if known (else
	// -1), is stored, handing its bytes to sink's writer as they are
	// hashed and stored, or to the store's ingestion the writer is
	// (registry.Resolver.StreamBlob).
	StreamBlob(ctx context.Context, repo string, d v1.Hash, size int64, sink func(size int64) (io.Writer, error)) error
	// HeadBlob and HeadManifest ask the upstream, with one HEAD under
	// repo's name, whether repo holds d (registry.Resolver.HeadBlob): how
	// the mirror learns that a stored digest may be served under a name.
	HeadBlob(ctx context.Context, repo string, d v1.Hash) (v1.Descriptor, error)
	HeadManifest(ctx context.Context, repo string, d v1.Hash) (v1.Descriptor, error)
	// OpenBlob and GetManifest fetch what the store does not keep (a
	// sha512 digest), verified as it is read and not stored
	// (registry.Resolver.OpenBlob).
	OpenBlob(ctx context.Context, repo string, d v1.Hash) (io.ReadCloser, int64, error)
	GetManifest(ctx context.Context, repo string, d v1.Hash) (v1.Descriptor, []byte, error)
	// ListTags lists a page of repo's tags (registry.Resolver.ListTags).
	ListTags(ctx context.Context, repo string, n int, last string) (*registry.TagList, error)
	// Referrers lists the referrers of subject in repo, from the
	// upstream's referrers API or its referrers tag schema, stored with
	// subject and served from the store when the upstream is down
	// (registry.Resolver.Referrers).
	Referrers(ctx context.Context, repo string, subject v1.Hash, maxAge time.Duration) (*registry.ReferrersList, error)
}

var _ Upstream = (*registry.Resolver)(nil)
