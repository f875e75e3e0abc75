package registry

import (
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// maxWalks bounds the walks a Resolver remembers; when full it starts over,
// which costs one re-read of each image's manifests and nothing else.
const maxWalks = 4096

// walkCache remembers, per top digest and platform list, what complete
// found by reading the stored manifests: the platform manifests and every
// blob they name. Digests are immutable, so the answer never goes stale;
// what can change is whether the blobs are still stored, which complete
// checks with a Stat each on every call. It keeps a warm hit from reading
// and hashing the manifests again (issue 12: a warm PullIfNotPresent
// resolve should cost microseconds).
type walkCache struct {
	mu    sync.Mutex
	walks map[walkKey]walk
}

type walkKey struct {
	top       v1.Hash
	platforms string // joined as asked: the walk names results as asked
}

type walk struct {
	manifests map[string]v1.Hash // as ResolvedImage.Manifests
	blobs     []v1.Hash          // every platform manifest, config and layer
}

func newWalkKey(top v1.Hash, platforms []string) walkKey {
	return walkKey{top: top, platforms: strings.Join(platforms, "\x00")}
}

func (c *walkCache) get(k walkKey) (walk, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.walks[k]
	return w, ok
}

func (c *walkCache) put(k walkKey, w walk) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.walks == nil || len(c.walks) >= maxWalks {
		c.walks = make(map[walkKey]walk)
	}
	c.walks[k] = w
}

// walkOf is what complete remembers of manifests.
func walkOf(manifests []platformManifest) walk {
	w := walk{manifests: manifestMap(manifests)}
	for _, pm := range manifests {
		w.blobs = append(w.blobs, pm.desc.Digest)
		for _, d := range pm.blobs {
			w.blobs = append(w.blobs, d.Digest)
		}
	}
	return w
}
