package localfs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// Two processes record roots and put blobs at once while a third
// collects to a byte budget: no rooted blob is lost, the blobs fit the
// budget once the collector has run, and each writer sees the other's
// roots.
const (
	rootWriterEnv    = "BUILDCACHE_TEST_WRITER"
	rootWriterImages = 40
	rootWriterLayer  = 2048
	rootWriterBudget = 2 * rootWriterImages * (rootWriterLayer + 1024) * 3 // room for every image, and junk
)

// rootWriterImage is image i of writer w: a layer, a config and a
// manifest, named "w<w>/image-<i>".
func rootWriterImage(w, i int) (name string, blobs []cachetest.Blob, desc v1.Descriptor) {
	layer := genBlob(uint64(w*100_000+i), rootWriterLayer)
	config := cachetest.Blob{Data: fmt.Appendf(nil, `{"writer":%d,"image":%d}`, w, i)}
	config.Digest = cachetest.Digest(config.Data)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.Digest.String(), "size": len(config.Data)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.Digest.String(), "size": len(layer.Data)}},
	})
	m := cachetest.Blob{Data: manifest, Digest: cachetest.Digest(manifest)}
	name = fmt.Sprintf("w%d/image-%d", w, i)
	desc = v1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: m.Digest, Size: int64(len(manifest)),
		Annotations: map[string]string{cache.AnnotationRefName: name}}
	return name, []cachetest.Blob{layer, config, m}, desc
}

func rootWriterRole(t *testing.T, c *helperChild) {
	ctx := t.Context()
	w, _ := strconv.Atoi(os.Getenv(rootWriterEnv))
	s := c.open(t, localfs.WithMaxBytes(rootWriterBudget))
	c.say("ready")
	c.await(t, "go")
	for i := range rootWriterImages {
		_, blobs, desc := rootWriterImage(w, i)
		leased, end, err := s.Lease(ctx) // as a pull holds one until its root is recorded
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blobs {
			if err := s.Put(leased, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
				t.Fatalf("Put: %v", err)
			}
		}
		if err := s.RecordRoot(leased, desc); err != nil {
			t.Fatalf("RecordRoot: %v", err)
		}
		end()
		junk := genBlob(uint64(w*100_000+50_000+i), 1500) // unreachable: the collector's to evict
		if err := s.Put(ctx, junk.Digest, int64(len(junk.Data)), bytes.NewReader(junk.Data)); err != nil {
			t.Fatalf("Put junk: %v", err)
		}
	}
	c.say("done")
	c.await(t, "check")
	for other := range 2 {
		for i := range rootWriterImages {
			name, blobs, desc := rootWriterImage(other, i)
			got, ok, err := s.Root(ctx, name)
			if err != nil || !ok || got.Digest != desc.Digest {
				t.Fatalf("writer %d: Root(%s) = %v, %v, %v", w, name, got.Digest, ok, err)
			}
			for _, b := range blobs {
				mustVerify(t, s, b.Digest, b.Data)
			}
		}
	}
	c.say("checked")
}

func TestTwoWritersAndACollector(t *testing.T) {
	dir := t.TempDir()
	collector, err := localfs.Open(dir, localfs.WithMaxBytes(rootWriterBudget))
	if err != nil {
		t.Fatal(err)
	}
	writers := []*helperProc{
		startHelper(t, "root-writer", dir, rootWriterEnv+"=0"),
		startHelper(t, "root-writer", dir, rootWriterEnv+"=1"),
	}
	for _, h := range writers {
		h.expect("ready")
	}
	for _, h := range writers {
		h.send("go")
	}
	var stop atomic.Bool
	done := make(chan error, 1)
	go func() {
		for !stop.Load() {
			time.Sleep(2 * time.Millisecond) // pacing, so that the writers get the GC lock between runs
			if _, err := collector.GC(t.Context(), localfs.GCMaxBytes(rootWriterBudget/2)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for _, h := range writers {
		h.expect("done")
	}
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatalf("GC: %v", err)
	}
	for _, h := range writers {
		h.send("check")
	}
	for _, h := range writers {
		h.expect("checked")
		h.mustSucceed()
	}
	if _, err := collector.GC(t.Context(), localfs.GCMaxBytes(rootWriterBudget)); err != nil {
		t.Fatal(err)
	}
	var total int64
	if err := collector.Walk(t.Context(), func(_ v1.Hash, size int64) error { total += size; return nil }); err != nil {
		t.Fatal(err)
	}
	if total > rootWriterBudget {
		t.Errorf("blobs hold %d bytes after GC, over the budget of %d", total, rootWriterBudget)
	}
	rep := mustVerifyStore(t, collector)
	if len(rep.Missing) > 0 {
		t.Fatalf("blobs missing: %v", rep.Missing)
	}
	if n := len(refNames(t, collector)); n != 2*rootWriterImages {
		t.Fatalf("%d roots, want %d", n, 2*rootWriterImages)
	}
}
