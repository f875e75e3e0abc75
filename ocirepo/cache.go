package ocirepo

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/flight"
	"github.com/buildcache/buildcache/regclient"
)

// Cache is a cache.LayerCache and cache.LayerCacheCloser whose blobs
// live in a registry repository, listed in an index manifest (see the
// package doc). Create it with New or NewAt.
type Cache struct {
	repo   name.Repository
	tag    name.Tag
	o      options
	client *regclient.Client
	stats  cache.Counters

	locks    digestLocks // one Put, Delete or drop per digest at a time
	configOK atomic.Bool // the empty config blob is known to be in the repository
	loads    flight.Group[v1.Hash, *indexState]

	snapMu sync.Mutex
	snap   *indexState // the newest index this Cache has read or written

	qmu     sync.Mutex
	open    *indexBatch                    // the batch new edits join; nil when none is waiting
	seq     uint64                         // the last batch's number
	writing chan struct{}                  // holds a token while a batch is written
	writes  flight.Group[uint64, struct{}] // callers waiting for a batch, by number
}

var (
	_ cache.LayerCacheCloser = (*Cache)(nil)
	_ cache.StatsReporter    = (*Cache)(nil)
)

// New returns a Cache on repo ("harbor.example.com/ci/cache",
// "localhost:5000/buildcache"). It makes no request: the repository and its
// index are created by the first Put.
//
// repo is a reference, read by go-containerregistry's (and Docker's)
// rules: its first component is the registry only when it has a "." or
// ":" or is "localhost"; otherwise the whole is a repository on Docker
// Hub, so "harbor/team/cache" is index.docker.io/harbor/team/cache and
// gets Docker Hub's credentials. To name a registry whose host is a single
// label, use NewAt.
func New(repo string, opts ...Option) (*Cache, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return nil, fmt.Errorf("ocirepo: New: invalid repository %q: %w", repo, err)
	}
	return newCache("New", r, opts)
}

// NewAt returns a Cache on repository ("team/cache") of the registry at
// host ("harbor", "localhost:5000", "registry.example.com"), as New does.
// host is the registry whatever it looks like, as the host of a URL is:
// NewAt("harbor", "team/cache") talks to harbor, where
// New("harbor/team/cache") would talk to Docker Hub. repository is
// lower-case path components of letters, digits and "._-" (no empty, "."
// or ".." component).
func NewAt(host, repository string, opts ...Option) (*Cache, error) {
	r, err := repositoryAt(host, repository)
	if err != nil {
		return nil, fmt.Errorf("ocirepo: NewAt: %w", err)
	}
	return newCache("NewAt", r, opts)
}

// repositoryAt is repository on the registry host, with none of a
// reference's guessing about which part is the registry.
func repositoryAt(host, repository string) (name.Repository, error) {
	if host == "" {
		return name.Repository{}, errors.New("no registry host")
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		return name.Repository{}, fmt.Errorf("invalid registry host %q: %w", host, err)
	}
	for _, c := range strings.Split(repository, "/") {
		if c == "" || c == "." || c == ".." {
			return name.Repository{}, fmt.Errorf("invalid repository %q: empty, \".\" or \"..\" path component", repository)
		}
	}
	// "localhost/" makes the parser take all of repository for the
	// repository, so that it checks the characters and the length.
	if _, err := name.NewRepository("localhost/" + repository); err != nil {
		return name.Repository{}, fmt.Errorf("invalid repository %q: %w", repository, err)
	}
	return reg.Repo(repository), nil
}

func newCache(fn string, r name.Repository, opts []Option) (*Cache, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	client := o.client
	if client == nil {
		var err error
		if client, err = regclient.New(); err != nil {
			return nil, fmt.Errorf("ocirepo: %s: %w", fn, err)
		}
	}
	return &Cache{
		repo:    r,
		tag:     r.Tag(o.tag),
		o:       o,
		client:  client,
		writing: make(chan struct{}, 1),
	}, nil
}

// Repository is the repository the blobs live in ("host:port/ci/cache"),
// as a reference that names the same registry when read back by
// go-containerregistry or by BuildKit's type=registry cache. A registry
// whose host is a single label (NewAt("harbor", ...)) is given
// its scheme's default port, "harbor:443/ci/cache", because a reference
// whose first part has no dot, colon or "localhost" means Docker Hub.
// Credentials for it are looked up under "harbor:443".
func (c *Cache) Repository() string {
	host := c.repo.RegistryStr()
	if host != "localhost" && !strings.ContainsAny(host, ".:") {
		port := ":443"
		if c.Insecure() {
			port = ":80"
		}
		return host + port + "/" + c.repo.RepositoryStr()
	}
	return c.repo.Name()
}

// IndexTag is the tag of the manifest listing the cached blobs. Nothing
// else may write to it.
func (c *Cache) IndexTag() string { return c.tag.TagStr() }

// Insecure reports whether the registry is spoken to over plain HTTP
// (WithInsecureRegistries, or a loopback address).
func (c *Cache) Insecure() bool { return c.client.Scheme(c.repo.Registry) == "http" }

// Stats reports what the cache has done since it was created. Evictions
// counts entries dropped because their blob was gone from the registry.
func (c *Cache) Stats() cache.Stats { return c.stats.Snapshot() }

// Close implements io.Closer: it closes the idle connections of its
// client (regclient.Client.Close; a client given with WithClient stays
// usable by its other users, as does the Cache).
func (c *Cache) Close() error { return c.client.Close() }
