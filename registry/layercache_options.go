package registry

import (
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// LayerCacheOption configures a LayerCache: a ClientOption, or one of the
// options below that only a LayerCache has.
type LayerCacheOption interface {
	applyLayerCache(*layerCacheOptions) error
}

type layerCacheOption func(*layerCacheOptions) error

func (f layerCacheOption) applyLayerCache(o *layerCacheOptions) error { return f(o) }

type layerCacheOptions struct {
	client     clientOptions
	tag        string
	blobDelete bool
	settle     time.Duration
}

func defaultLayerCacheOptions() layerCacheOptions {
	return layerCacheOptions{
		client:     defaultClientOptions(),
		tag:        DefaultIndexTag,
		blobDelete: true,
		settle:     25 * time.Millisecond,
	}
}

// WithIndexTag keeps the index at this tag of the repository (default
// DefaultIndexTag, "buildcache-index"). LayerCaches with different tags on
// one repository are separate caches that share blob storage.
func WithIndexTag(tag string) LayerCacheOption {
	return layerCacheOption(func(o *layerCacheOptions) error {
		if _, err := name.NewTag("example.com/repo:" + tag); err != nil || tag == "" {
			return fmt.Errorf("registry: WithIndexTag(%q): not a valid tag", tag)
		}
		o.tag = tag
		return nil
	})
}

// WithBlobDelete says whether Delete, and the removal of a corrupt entry,
// also delete the blob from the registry (default true). Turn it off when
// the repository also holds images, which may share blobs with the cache:
// a blob DELETE unlinks the blob from the whole repository.
func WithBlobDelete(on bool) LayerCacheOption {
	return layerCacheOption(func(o *layerCacheOptions) error {
		o.blobDelete = on
		return nil
	})
}

// WithIndexSettle sets the least time an index write waits before it reads
// the index back to check that no other writer dropped its entries
// (default 25ms). The wait is at least twice the time the update's own
// read-modify-write took, and at most 2s. 0 turns the wait off (the read
// back still happens): fit for a repository with a single writer.
func WithIndexSettle(d time.Duration) LayerCacheOption {
	return layerCacheOption(func(o *layerCacheOptions) error {
		if d < 0 {
			return fmt.Errorf("registry: WithIndexSettle(%v): must not be negative", d)
		}
		o.settle = d
		return nil
	})
}
