package testimage

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// TB is the part of testing.TB the ForTest helpers use; declaring it here
// keeps the testing package out of the example programs that import this
// one.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// Test has the package's functions for a test: each fails the test
// instead of returning an error.
type Test struct{ t TB }

// ForTest returns the package's functions failing t on error:
// testimage.ForTest(t).Index("linux/amd64").
func ForTest(t TB) Test { return Test{t} }

func (h Test) check(err error) {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
}

// Program is the package's Program.
func (h Test) Program(goarch string) []byte {
	h.t.Helper()
	b, err := Program(goarch)
	h.check(err)
	return b
}

// Index is the package's Index, with no filler layers.
func (h Test) Index(platforms ...string) v1.ImageIndex {
	h.t.Helper()
	idx, err := Index(platforms)
	h.check(err)
	return idx
}

// RandomIndex is the package's RandomIndex.
func (h Test) RandomIndex(platforms []string, layerSize int64, layers int, shared ...v1.Layer) v1.ImageIndex {
	h.t.Helper()
	idx, err := RandomIndex(platforms, layerSize, layers, shared...)
	h.check(err)
	return idx
}

// Push is the package's Push.
func (h Test) Push(ref string, idx v1.ImageIndex) v1.Hash {
	h.t.Helper()
	d, err := Push(context.Background(), ref, idx)
	h.check(err)
	return d
}

// Store is the package's Store.
func (h Test) Store(store cache.Putter, idx v1.ImageIndex) v1.Hash {
	h.t.Helper()
	d, err := Store(context.Background(), store, idx)
	h.check(err)
	return d
}

// Attach is the package's Attach.
func (h Test) Attach(repo string, subject v1.Hash, artifactType string, content []byte, annotations map[string]string) v1.Hash {
	h.t.Helper()
	d, err := Attach(context.Background(), repo, subject, artifactType, content, annotations)
	h.check(err)
	return d
}

// PushArtifact is the package's PushArtifact.
func (h Test) PushArtifact(ref, artifactType string, content []byte, annotations map[string]string) v1.Hash {
	h.t.Helper()
	d, err := PushArtifact(context.Background(), ref, artifactType, content, annotations)
	h.check(err)
	return d
}
