package registry

import (
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/internal/memo"
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
type walkCache = memo.Map[walkKey, walk] // of at most maxWalks

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
