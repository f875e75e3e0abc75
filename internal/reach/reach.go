// Package reach finds the blobs a root reaches in a store that is not a
// local directory: the roots recorded in a bucket (the collector of an
// s3 cache, a tier writing a shared record) read their manifests through
// a getter, and keep the digests in a Set whose memory is 32 bytes a
// digest plus the map's own.
//
// What a manifest reaches is what localfs's collector keeps: an index's
// child manifests (optional: a store may hold only some platforms), an
// image manifest's config and layers, an artifact's blobs, a subject
// (optional). Only descriptors whose media type is a manifest or an
// index are read; everything else is a leaf.
package reach

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

// Key is a sha256 digest as 32 bytes: what a Set holds.
type Key [32]byte

// KeyOf returns d's key, and false for a digest that is not a valid
// sha256 digest (cache.ValidateDigest).
func KeyOf(d v1.Hash) (Key, bool) {
	var k Key
	if cache.ValidateDigest(d) != nil {
		return k, false
	}
	if _, err := hex.Decode(k[:], []byte(d.Hex)); err != nil {
		return k, false
	}
	return k, true
}

// Hash is the digest of k.
func (k Key) Hash() v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(k[:])} }

// Set is a set of digests.
type Set map[Key]struct{}

// Add adds d and reports whether it was not there yet; an invalid digest
// is not added.
func (s Set) Add(d v1.Hash) bool {
	k, ok := KeyOf(d)
	if !ok {
		return false
	}
	if _, ok := s[k]; ok {
		return false
	}
	s[k] = struct{}{}
	return true
}

// Has reports whether d is in s.
func (s Set) Has(d v1.Hash) bool {
	k, ok := KeyOf(d)
	if !ok {
		return false
	}
	_, ok = s[k]
	return ok
}

// Getter reads a manifest or an index by its descriptor, verified, at
// most cache.MaxManifestBytes; a blob that is not there is an error
// wrapping cache.ErrNotFound.
type Getter func(ctx context.Context, desc v1.Descriptor) ([]byte, error)

// GetterOf makes a Getter of a store's verifying Get: a manifest is read
// whole, and one larger than cache.MaxManifestBytes is an error.
func GetterOf(get func(context.Context, v1.Hash) (io.ReadCloser, error)) Getter {
	return func(ctx context.Context, desc v1.Descriptor) ([]byte, error) {
		rc, err := get(ctx, desc.Digest)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, cache.MaxManifestBytes+1))
		if err != nil {
			return nil, err
		}
		if len(b) > cache.MaxManifestBytes {
			return nil, fmt.Errorf("%s is larger than %d bytes, not a manifest", desc.Digest, cache.MaxManifestBytes)
		}
		return b, nil
	}
}

// IsManifest reports whether a descriptor of media type mt names a
// manifest or an index, whose references a walk follows.
func IsManifest(mt types.MediaType) bool {
	switch mt {
	case types.OCIImageIndex, types.OCIManifestSchema1, types.DockerManifestList, types.DockerManifestSchema2,
		"application/vnd.oci.artifact.manifest.v1+json":
		return true
	}
	return false
}

// maxManifests bounds the manifests one Walk reads: real images have
// tens, and a hostile index could list thousands.
const maxManifests = 4096

type refs struct {
	Manifests []v1.Descriptor `json:"manifests"`
	Config    *v1.Descriptor  `json:"config"`
	Layers    []v1.Descriptor `json:"layers"`
	Blobs     []v1.Descriptor `json:"blobs"`
	Subject   *v1.Descriptor  `json:"subject"`
}

// Walk adds to seen top and every blob it reaches, reading the
// manifests it meets with get, and calls visit (if not nil) for each
// digest it adds. What seen holds already is not walked again, so one
// Set shared by the walks of many roots reads each manifest once. A
// manifest that is not there ends its branch (its digest stays in
// seen); any other error of get ends the walk. It returns how many
// manifests it read.
func Walk(ctx context.Context, top v1.Descriptor, get Getter, seen Set, visit func(d v1.Hash, manifest bool)) (int, error) {
	read := 0
	var walk func(desc v1.Descriptor, depth int) error
	walk = func(desc v1.Descriptor, depth int) error {
		if !seen.Add(desc.Digest) {
			return nil
		}
		manifest := IsManifest(desc.MediaType)
		if visit != nil {
			visit(desc.Digest, manifest)
		}
		if !manifest {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if depth > 8 {
			return fmt.Errorf("reach: %s: manifests nest more than 8 deep", desc.Digest)
		}
		if read++; read > maxManifests {
			return fmt.Errorf("reach: %s: more than %d manifests", top.Digest, maxManifests)
		}
		b, err := get(ctx, desc)
		if errors.Is(err, cache.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var r refs
		if json.Unmarshal(b, &r) != nil {
			return nil // not JSON: a leaf after all
		}
		children := append(append(append([]v1.Descriptor{}, r.Manifests...), r.Layers...), r.Blobs...)
		for _, p := range []*v1.Descriptor{r.Config, r.Subject} {
			if p != nil {
				children = append(children, *p)
			}
		}
		for _, c := range children {
			if err := walk(c, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	err := walk(top, 0)
	return read, err
}
