package localfs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	contentlocal "github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/log"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/client/ociindex"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// These tests put a localfs store and BuildKit's client on one directory,
// as a type=local cache on a localfs store does: BuildKit's client writes
// blobs with containerd's local content store (through ingest/) and tags
// its cache manifest in index.json with client/ociindex, under a flock on
// index.json.lock that it removes after each use.

func init() {
	// containerd's content store warns on every open that the file system
	// has no fs-verity: noise in test output.
	_ = log.SetLevel("error")
}

const cacheConfigType = "application/vnd.buildkit.cacheconfig.v0"

// refNames lists the ref.name annotations of the index's roots.
func refNames(t *testing.T, s *localfs.Store) map[string]bool {
	t.Helper()
	im, err := s.Index(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, d := range im.Manifests {
		names[d.Annotations[cache.AnnotationRefName]] = true
	}
	return names
}

// updateLoop adds rounds roots named <name>-<i> to s's index, one
// UpdateIndex each.
func updateLoop(t *testing.T, s *localfs.Store, name string, rounds int) {
	for i := range rounds {
		ref := fmt.Sprint(name, "-", i)
		err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
			im.Manifests = append(im.Manifests, v1.Descriptor{
				MediaType: types.OCIManifestSchema1, Digest: cachetest.NewBlob(uint64(i), 4).Digest, Size: 4,
				Annotations: map[string]string{cache.AnnotationRefName: ref},
			})
			return nil
		})
		if err != nil {
			t.Errorf("UpdateIndex %s: %v", ref, err)
			return
		}
	}
}

// refused runs fn until it succeeds. ociindex does not wait for its lock:
// a call that finds it taken fails with "could not lock", and BuildKit's
// client would fail the build; here it is counted and tried again. Any
// other error fails the test.
func refused(t *testing.T, what string, fn func() error) (n int) {
	for {
		err := fn()
		if err == nil {
			return n
		}
		if !strings.Contains(err.Error(), "could not lock") {
			t.Errorf("%s: %v", what, err)
			return n
		}
		n++
	}
}

// openTwice opens two stores on one directory: two processes, as far as
// their locks go.
func openTwice(t *testing.T) (dir string, s1, s2 *localfs.Store) {
	t.Helper()
	dir = t.TempDir()
	var err error
	if s1, err = localfs.Open(dir); err != nil {
		t.Fatal(err)
	}
	if s2, err = localfs.Open(dir); err != nil {
		t.Fatal(err)
	}
	return dir, s1, s2
}

// TestUpdateIndexWithBuildKitOCIIndex runs BuildKit's index writer against
// two localfs stores updating the same index.json: no update may be lost.
func TestUpdateIndexWithBuildKitOCIIndex(t *testing.T) {
	dir, s1, s2 := openTwice(t)
	const rounds = 60
	bk := ociindex.NewStoreIndex(dir)
	var wg sync.WaitGroup
	var refusals atomic.Int64
	wg.Go(func() {
		for i := range rounds {
			desc := ocispecs.Descriptor{MediaType: ocispecs.MediaTypeImageManifest, Digest: digest.FromString(fmt.Sprint("bk", i)), Size: 1}
			refusals.Add(int64(refused(t, "ociindex Put", func() error { return bk.Put(desc, ociindex.Tag(fmt.Sprint("bk-", i))) })))
		}
	})
	wg.Go(func() { updateLoop(t, s1, "a", rounds) })
	wg.Go(func() { updateLoop(t, s2, "b", rounds) })
	wg.Wait()
	names := refNames(t, s1)
	var lost []string
	for i := range rounds {
		for _, prefix := range []string{"bk-", "a-", "b-"} {
			if n := fmt.Sprint(prefix, i); !names[n] {
				lost = append(lost, n)
			}
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d index entries lost: %v", len(lost), 3*rounds, lost)
	}
	if len(names) != 3*rounds {
		t.Fatalf("index has %d entries, want %d", len(names), 3*rounds)
	}
	t.Logf("ociindex Puts refused while the lock was taken: %d", refusals.Load())
}

// TestBuildKitReadsDuringUpdateIndex: BuildKit's client reads index.json
// (a local cache import) while localfs updates it. Every read sees a whole
// index or is refused by the lock; ociindex's removal of the lock file
// after each read does not let two localfs updates overlap.
//
// (BuildKit's Put and Read together are not tested with localfs: ociindex
// removes the lock file after unlocking, so a Read can unlink the file a
// Put holds, after which the next locker, BuildKit's or ours, locks a new
// file while the Put still writes. BuildKit's clients lose each other's
// entries that way without localfs.)
func TestBuildKitReadsDuringUpdateIndex(t *testing.T) {
	dir, s1, s2 := openTwice(t)
	const rounds = 25
	bk := ociindex.NewStoreIndex(dir)
	done := make(chan struct{})
	var reads, refusals int
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			refusals += refused(t, "ociindex Read", func() error { _, err := bk.Read(); return err })
			reads++
		}
	})
	var writers sync.WaitGroup
	writers.Go(func() { updateLoop(t, s1, "a", rounds) })
	writers.Go(func() { updateLoop(t, s2, "b", rounds) })
	writers.Wait()
	close(done)
	wg.Wait()
	if names := refNames(t, s1); len(names) != 2*rounds {
		t.Fatalf("index has %d entries, want %d", len(names), 2*rounds)
	}
	t.Logf("%d ociindex reads; %d attempts refused while the lock was taken", reads, refusals)
}

// writeBlob writes b as BuildKit's client does: through containerd's
// local content store, which stages it in ingest/.
func writeBlob(t *testing.T, cs content.Store, mediaType string, b []byte) ocispecs.Descriptor {
	t.Helper()
	desc := ocispecs.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(t.Context(), cs, desc.Digest.String(), bytes.NewReader(b), desc); err != nil {
		t.Fatal(err)
	}
	return desc
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// buildKitCache writes a cache export as BuildKit v0.33.1 writes a
// type=local one: layers, a cache config, and a manifest over them (an
// OCI image manifest by default, an index with image-manifest=false),
// tagged in index.json. It returns the manifest and every blob.
func buildKitCache(t *testing.T, dir string, imageManifest bool, tag string, seed int) (ocispecs.Descriptor, []digest.Digest) {
	t.Helper()
	cs, err := contentlocal.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var layers []ocispecs.Descriptor
	for i := range 3 {
		layers = append(layers, writeBlob(t, cs, ocispecs.MediaTypeImageLayerGzip, cachetest.NewBlob(uint64(1000*seed+i), 3000).Data))
	}
	cfg := writeBlob(t, cs, cacheConfigType, marshal(t, map[string]any{"layers": []any{}, "records": []any{}, "seed": seed}))
	var top ocispecs.Descriptor
	if imageManifest {
		top = writeBlob(t, cs, ocispecs.MediaTypeImageManifest, marshal(t, ocispecs.Manifest{
			Versioned: specsVersioned, MediaType: ocispecs.MediaTypeImageManifest, Config: cfg, Layers: layers,
		}))
	} else {
		top = writeBlob(t, cs, ocispecs.MediaTypeImageIndex, marshal(t, ocispecs.Index{
			Versioned: specsVersioned, MediaType: ocispecs.MediaTypeImageIndex, Manifests: append(append([]ocispecs.Descriptor{}, layers...), cfg),
		}))
	}
	if err := ociindex.NewStoreIndex(dir).Put(top, ociindex.Tag(tag)); err != nil {
		t.Fatal(err)
	}
	all := []digest.Digest{top.Digest, cfg.Digest}
	for _, l := range layers {
		all = append(all, l.Digest)
	}
	return top, all
}

var specsVersioned = specs.Versioned{SchemaVersion: 2}

func hashOf(d digest.Digest) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: d.Encoded()} }

// TestGCKeepsBuildKitCache: blobs reachable from a BuildKit cache manifest
// tagged in index.json survive GC in both of BuildKit's shapes; once the
// tag moves, the old export's blobs are collected like any other.
func TestGCKeepsBuildKitCache(t *testing.T) {
	for _, imageManifest := range []bool{true, false} {
		t.Run(fmt.Sprintf("image-manifest=%v", imageManifest), func(t *testing.T) {
			dir := t.TempDir()
			s, err := localfs.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, kept := buildKitCache(t, dir, imageManifest, "latest", 1)
			stray := cachetest.NewBlob(99, 1000)
			putBlob(t, s, stray)

			rep, err := s.GC(t.Context(), localfs.GCMaxBytes(1)) // collect everything unreachable
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range kept {
				if !present(t, s, hashOf(d)) {
					t.Errorf("GC removed %s of BuildKit's cache", d)
				}
			}
			if present(t, s, stray.Digest) || rep.Removed != 1 {
				t.Errorf("GC report %+v: want only the stray blob removed", rep)
			}
			vr, err := s.Verify(t.Context())
			if err != nil || len(vr.Bad) != 0 || len(vr.Missing) != 0 || vr.Checked != len(kept) {
				t.Errorf("Verify = %+v, %v; want %d good blobs, nothing missing", vr, err, len(kept))
			}

			// A new export under the same tag replaces the old one in
			// index.json; the old blobs are now garbage.
			_, kept2 := buildKitCache(t, dir, imageManifest, "latest", 2)
			if _, err := s.GC(t.Context(), localfs.GCMaxBytes(1)); err != nil {
				t.Fatal(err)
			}
			for _, d := range kept {
				if present(t, s, hashOf(d)) {
					t.Errorf("GC kept %s of a replaced cache export", d)
				}
			}
			for _, d := range kept2 {
				if !present(t, s, hashOf(d)) {
					t.Errorf("GC removed %s of the current cache export", d)
				}
			}
		})
	}
}

// TestIngestLeftoversAreNotBlobs: an export cut short leaves
// containerd's ingest/ directory (and BuildKit's index.json.lock); Walk,
// Verify, GC and a reopen ignore them.
func TestIngestLeftoversAreNotBlobs(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := cachetest.NewBlob(1, 2000)
	putBlob(t, s, good)
	cs, err := contentlocal.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	half := cachetest.NewBlob(2, 4096)
	w, err := content.OpenWriter(t.Context(), cs, content.WithRef("interrupted-export"),
		content.WithDescriptor(ocispecs.Descriptor{Digest: digest.Digest(half.Digest.String()), Size: int64(len(half.Data))}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(half.Data[:1000]); err != nil {
		t.Fatal(err)
	}
	w.Close() // no Commit: the data stays in ingest/
	if entries, err := os.ReadDir(filepath.Join(dir, "ingest")); err != nil || len(entries) != 1 {
		t.Fatalf("ingest/ = %v, %v; want one interrupted write", entries, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json.lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	var walked []v1.Hash
	if err := s.Walk(t.Context(), func(d v1.Hash, _ int64) error { walked = append(walked, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(walked) != 1 || walked[0] != good.Digest {
		t.Errorf("Walk = %v, want only %s", walked, good.Digest)
	}
	vr, err := s.Verify(t.Context())
	if err != nil || vr.Checked != 1 || len(vr.Bad) != 0 || len(vr.Missing) != 0 {
		t.Errorf("Verify = %+v, %v; want one good blob", vr, err)
	}
	if _, err := s.GC(t.Context(), localfs.GCMaxBytes(1)); err != nil {
		t.Errorf("GC: %v", err)
	}
	if _, err := localfs.Open(dir); err != nil {
		t.Errorf("reopen: %v", err)
	}
}

// TestIndexWaitsOutBuildKitsInPlaceWrite: ociindex rewrites index.json in
// place (WriteAt, Truncate) under its lock, so an unlocked read may see a
// mix of two versions. Index then reads again under the lock instead of
// failing.
func TestIndexWaitsOutBuildKitsInPlaceWrite(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "index.json.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "index.json")
	good, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, append(good[:len(good)-3:len(good)-3], `"x": [`...), 0o644); err != nil { // half-written
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Index(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Index during a locked write = %v, want it to wait for the lock", err)
	}
	if err := os.WriteFile(p, good, 0o644); err != nil {
		t.Fatal(err)
	}
	unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := s.Index(t.Context()); err != nil {
		t.Fatalf("Index after the write: %v", err)
	}
	// A torn file that nobody is writing is reported, not waited on.
	if err := os.WriteFile(p, []byte(`{"manifests": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Index(t.Context()); err == nil || !strings.Contains(err.Error(), "not an OCI index") {
		t.Fatalf("Index of a broken index.json = %v", err)
	}
}
