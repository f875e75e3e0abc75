package ocirepo

import (
	"errors"
	"fmt"
	"time"

	"github.com/buildcache/buildcache/regclient"
	"github.com/google/go-containerregistry/pkg/name"
)

// Option configures a Cache.
type Option func(*options) error

type options struct {
	client     *regclient.Client // nil: regclient.New()
	tag        string
	blobDelete bool
	settle     time.Duration
}

func defaultOptions() options {
	return options{
		tag:        DefaultIndexTag,
		blobDelete: true,
		settle:     25 * time.Millisecond,
	}
}

// WithIndexTag keeps the index at this tag of the repository (default
// DefaultIndexTag, "buildcache-index"). Caches with different tags on
// one repository are separate caches that share blob storage.
func WithIndexTag(tag string) Option {
	return func(o *options) error {
		if _, err := name.NewTag("example.com/repo:" + tag); err != nil || tag == "" {
			return fmt.Errorf("ocirepo: WithIndexTag(%q): not a valid tag", tag)
		}
		o.tag = tag
		return nil
	}
}

// WithBlobDelete says whether Delete, and the removal of a corrupt entry,
// also delete the blob from the registry (default true). Turn it off when
// the repository also holds images, which may share blobs with the cache:
// a blob DELETE unlinks the blob from the whole repository.
func WithBlobDelete(on bool) Option {
	return func(o *options) error {
		o.blobDelete = on
		return nil
	}
}

// WithIndexSettle sets the least time an index write waits before it reads
// the index back to check that no other writer dropped its entries
// (default 25ms). The wait is at least twice the time the update's own
// read-modify-write took, and at most 2s. 0 turns the wait off (the read
// back still happens): fit for a repository with a single writer.
func WithIndexSettle(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("ocirepo: WithIndexSettle(%v): must not be negative", d)
		}
		o.settle = d
		return nil
	}
}

// WithClient sends the cache's requests through c (default: a client of
// its own, regclient.New() with the defaults it states). Credentials,
// plain HTTP (regclient.WithInsecureRegistries), retries and timeouts are
// the client's options; a client shared with a registry.Resolver
// (registry.WithClient) shares its logins, rate limits and the registries
// it knows to be down.
func WithClient(c *regclient.Client) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("ocirepo: WithClient(nil)")
		}
		o.client = c
		return nil
	}
}
