package localfs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
)

func namedRoot(name string, seed int) v1.Descriptor {
	return v1.Descriptor{
		MediaType:   "application/vnd.oci.image.manifest.v1+json",
		Size:        int64(100 + seed),
		Digest:      v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", seed)},
		Annotations: map[string]string{cache.AnnotationRefName: name},
	}
}

func mustRoot(t *testing.T, s *localfs.Store, name string) v1.Descriptor {
	t.Helper()
	d, ok, err := s.Root(t.Context(), name)
	if err != nil || !ok {
		t.Fatalf("Root(%q) = %v, %v; want a root", name, ok, err)
	}
	return d
}

// An in-place rewrite of index.json to the same size, right after the
// store read it (as BuildKit's ociindex rewrites it, same inode, within
// one tick of the file system's clock) is seen by the next call.
func TestViewSeesSameSizeRewriteInPlace(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
		im.Manifests = append(im.Manifests, namedRoot("a", 1))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := mustRoot(t, s, "a"); got.Digest.Hex != fmt.Sprintf("%064x", 1) {
		t.Fatalf("Root(a) = %s", got.Digest)
	}
	p := filepath.Join(dir, "index.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	nb := bytes.Replace(b, []byte(fmt.Sprintf("%064x", 1)), []byte(fmt.Sprintf("%064x", 2)), 1)
	f, err := os.OpenFile(p, os.O_WRONLY, 0) // the same inode, the same size
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(nb, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := mustRoot(t, s, "a"); got.Digest.Hex != fmt.Sprintf("%064x", 2) {
		t.Fatalf("after an in-place rewrite, Root(a) = %s, want the new digest", got.Digest)
	}
}

// What Index and Root return is the caller's: changing it changes
// nothing in the store.
func TestViewIsNotChangedThroughWhatItReturns(t *testing.T) {
	s, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordRoot(t.Context(), namedRoot("a", 1)); err != nil {
		t.Fatal(err)
	}
	d := mustRoot(t, s, "a")
	d.Annotations[cache.AnnotationRefName] = "changed"
	im, err := s.Index(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	im.Manifests[0].Annotations[cache.AnnotationRefName] = "changed"
	im.Manifests[0].Digest.Hex = "00"
	if got := mustRoot(t, s, "a"); got.Digest.Hex != fmt.Sprintf("%064x", 1) {
		t.Fatalf("Root(a) = %s after the caller changed its copies", got.Digest)
	}
	if _, ok, _ := s.Root(t.Context(), "changed"); ok {
		t.Fatal("a name set in a returned copy became a root")
	}
}

// Roots recorded by one store are seen by another on the same directory
// at once, by index.json readers after compaction, and survive a reopen;
// a newer record of a name replaces the older.
func TestRecordedRootsAreSharedAndCompacted(t *testing.T) {
	dir := t.TempDir()
	a, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Root(t.Context(), "x"); ok {
		t.Fatal("root before it was recorded")
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.RecordRoot(t.Context(), namedRoot(fmt.Sprintf("r%d", i), i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := a.RecordRoot(t.Context(), namedRoot("x", 1)); err != nil {
		t.Fatal(err)
	}
	if err := a.RecordRoot(t.Context(), namedRoot("x", 2)); err != nil {
		t.Fatal(err)
	}
	if got := mustRoot(t, b, "x"); got.Digest.Hex != fmt.Sprintf("%064x", 2) {
		t.Fatalf("other store: Root(x) = %s, want the newer record", got.Digest)
	}
	if n := len(refNames(t, b)); n != 51 {
		t.Fatalf("other store's Index has %d names, want 51", n)
	}
	if err := b.CompactRoots(t.Context()); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(raw, &im); err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 51 {
		t.Fatalf("index.json after compaction has %d roots, want 51", len(im.Manifests))
	}
	if got := mustRoot(t, a, "x"); got.Digest.Hex != fmt.Sprintf("%064x", 2) {
		t.Fatalf("after compaction Root(x) = %s", got.Digest)
	}
	if err := a.RecordRoot(t.Context(), namedRoot("late", 3)); err != nil {
		t.Fatal(err)
	}
	c, err := localfs.Open(dir) // compacts what is journalled
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(filepath.Join(dir, "index.json"))
	if !bytes.Contains(raw, []byte(`"late"`)) {
		t.Fatal("Open did not compact the journal into index.json")
	}
	mustRoot(t, c, "late")
	mustRoot(t, a, "late")
}
