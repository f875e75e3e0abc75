package registry

import (
	"context"
	"fmt"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// tally counts what one resolve downloads, for its Explanation. It rides
// in the context so that the shared download paths (manifests, blobs)
// need no extra parameter; the resolver-wide counters are kept apart.
type tally struct {
	blobs atomic.Int64
	bytes atomic.Int64
	trust atomic.Pointer[string] // what a trust policy said (verify.go)
}

type tallyKey struct{}

func withTally(ctx context.Context) (context.Context, *tally) {
	t := &tally{}
	return context.WithValue(ctx, tallyKey{}, t), t
}

// tallyOf is ctx's tally, or nil.
func tallyOf(ctx context.Context) *tally {
	t, _ := ctx.Value(tallyKey{}).(*tally)
	return t
}

func (t *tally) add(blobs, bytes int64) {
	if t != nil {
		t.blobs.Add(blobs)
		t.bytes.Add(bytes)
	}
}

// setTrust notes what a trust policy's verification said.
func (t *tally) setTrust(note string) {
	if t != nil {
		t.trust.Store(&note)
	}
}

// trustNote is what setTrust noted, or "".
func (t *tally) trustNote() string {
	if t == nil {
		return ""
	}
	if p := t.trust.Load(); p != nil {
		return *p
	}
	return ""
}

// explain finishes why and sets it on res, which it returns with err.
func explain(res *cache.ResolvedImage, err error, why cache.Explanation, t *tally, reason string) (*cache.ResolvedImage, error) {
	if err != nil {
		return nil, err
	}
	why.Fetched, why.FetchedBytes = int(t.blobs.Load()), t.bytes.Load()
	why.Reason = reason
	why.Trust = t.trustNote()
	res.Why = why
	return res, nil
}

// missing lists what of top, for platforms, the store lacks: the
// manifests it could not read, or else the blobs they list that are not
// there. It is only asked once complete has failed, before a pull.
func (r *Resolver) missing(ctx context.Context, top v1.Descriptor, platforms []string) []v1.Hash {
	var out []v1.Hash
	b, err := r.readBlob(ctx, top.Digest, cache.MaxManifestBytes)
	if err != nil {
		return []v1.Hash{top.Digest}
	}
	get := r.storedGetter(ctx)
	manifests, err := r.platformManifests(top.Digest, b, platforms, func(d v1.Descriptor, config bool) ([]byte, error) {
		b, err := get(d, config)
		if err != nil {
			out = append(out, d.Digest)
		}
		return b, err
	})
	if err != nil {
		return out
	}
	seen := map[v1.Hash]bool{}
	for _, pm := range manifests {
		for _, d := range pm.blobs {
			if seen[d.Digest] {
				continue
			}
			seen[d.Digest] = true
			if _, err := r.store.Stat(ctx, d.Digest); err != nil {
				out = append(out, d.Digest)
			}
		}
	}
	return out
}

// short is a digest as reasons print it: "sha256:" and 12 hex digits.
func short(d v1.Hash) string {
	if len(d.Hex) <= 12 {
		return d.String()
	}
	return d.Algorithm + ":" + d.Hex[:12]
}

// blobCount is "1 blob", "3 blobs".
func blobCount(n int) string {
	if n == 1 {
		return "1 blob"
	}
	return fmt.Sprintf("%d blobs", n)
}
