//go:build linux

package localfs_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// --- two processes Put the same blob at the same time ---------------------

const samePutSize = 16 << 20

// samePutRole puts the blob of seed 32 once the test says "go". Halfway
// through it waits until the other helper's temp file for the same digest
// exists too, so the two writes really overlap.
func samePutRole(t *testing.T, c *helperChild) {
	d, err := cache.ParseDigest(os.Getenv(helperDigestEnv))
	if err != nil {
		t.Fatal(err)
	}
	s := c.openAndAwaitGo(t)
	overlapped := false
	r := &hookReader{r: genStream(32, samePutSize), before: func(n int64) error {
		if n >= samePutSize/2 && !overlapped {
			// The other writer's temp file is there now, or it was: a
			// writer gets past this point only once it has seen ours, so
			// a committed blob means it overlapped with us and finished
			// first (as it may when this process is slow to get here).
			blob := filepath.Join(c.dir, "blobs", "sha256", d.Hex)
			overlapped = pollUntil(helperTimeout, func() bool {
				if len(tempFiles(t, c.dir, d.Hex[:16])) >= 2 {
					return true
				}
				_, err := os.Stat(blob)
				return err == nil
			})
			if !overlapped {
				return errors.New("the other writer's temp file never appeared")
			}
		}
		return nil
	}}
	if err := s.Put(t.Context(), d, samePutSize, r); err != nil {
		t.Fatalf("Put: %v", err)
	}
	c.say("done overlapped=%v", overlapped)
}

func TestTwoProcessesPutTheSameBlob(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir) // creates the layout before the helpers race
	if err != nil {
		t.Fatal(err)
	}
	d := streamDigest(32, samePutSize)
	var hs []*helperProc
	for range 2 {
		hs = append(hs, startHelper(t, "same-put", dir, helperDigestEnv+"="+d.String()))
	}
	for _, h := range hs {
		h.expect("ready")
	}
	for _, h := range hs {
		h.send("go")
	}
	for _, h := range hs {
		if got := h.expect("done "); got != "overlapped=true" {
			t.Errorf("helper: %s, want overlapped=true", got)
		}
		h.mustSucceed()
	}

	var blobs []v1.Hash
	if err := s.Walk(t.Context(), func(h v1.Hash, size int64) error {
		if size != samePutSize {
			t.Errorf("%s has %d bytes, want %d", h, size, samePutSize)
		}
		blobs = append(blobs, h)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 1 || blobs[0] != d {
		t.Fatalf("store holds %v, want just %s", blobs, d)
	}
	mustVerify(t, s, d, genBlob(32, samePutSize).Data)
	mustVerifyStore(t, s)
	if tmps := tempFiles(t, dir, ""); len(tmps) != 0 {
		t.Fatalf("temp files left: %v", tmps)
	}
}

// --- GC in one process, reads in another ----------------------------------

// gcFixture is a store's content for the GC race: unreachable blobs, and a
// manifest that index.json roots with the config and layer it references.
type gcFixture struct {
	free   []cachetest.Blob // reachable from no root: GC may remove them
	rooted []cachetest.Blob // manifest, config, layer: GC must keep them
	root   v1.Descriptor    // index.json's entry for the manifest
}

func newGCFixture() gcFixture {
	var fx gcFixture
	for i := range 6 {
		fx.free = append(fx.free, genBlob(200+uint64(i), 256<<10))
	}
	layer := genBlob(300, 512<<10)
	cfgData := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfg := cachetest.Blob{Data: cfgData, Digest: cachetest.Digest(cfgData)}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: cfg.Digest, Size: int64(len(cfg.Data))},
		Layers:        []v1.Descriptor{{MediaType: types.OCILayer, Digest: layer.Digest, Size: int64(len(layer.Data))}},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	man := cachetest.Blob{Data: raw, Digest: cachetest.Digest(raw)}
	fx.rooted = []cachetest.Blob{man, cfg, layer}
	fx.root = v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: man.Digest, Size: int64(len(raw)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": "gc-race"}}
	return fx
}

const (
	gcLoopMax   = 20000 // GC runs at most, if never told to stop
	getLoopRuns = 60    // rounds of reading every blob
)

// gcLoopRole puts an unreachable blob back and collects, again and again,
// until the test says "stop". Roots must survive every run.
func gcLoopRole(t *testing.T, c *helperChild) {
	ctx := t.Context()
	fx := newGCFixture()
	s := c.openAndAwaitGo(t)
	stop := c.stopped()
	deadline := time.Now().Add(helperTimeout)
	runs, removed := 0, 0
loop:
	for ; runs < gcLoopMax && time.Now().Before(deadline); runs++ {
		select {
		case <-stop:
			break loop
		default:
		}
		b := fx.free[runs%len(fx.free)]
		if err := s.Put(ctx, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
			t.Fatalf("Put %s: %v", b.Digest, err)
		}
		opt := localfs.GCMaxBytes(1)
		if runs%2 == 1 {
			opt = localfs.GCTTL(time.Nanosecond)
		}
		rep, err := s.GC(ctx, opt)
		if err != nil {
			t.Fatalf("GC: %v", err)
		}
		removed += rep.Removed
		if rep.Roots != len(fx.rooted) {
			t.Fatalf("GC run %d counted %d reachable blobs, want %d: %+v", runs, rep.Roots, len(fx.rooted), rep)
		}
		for _, b := range fx.rooted {
			if _, err := s.Stat(ctx, b.Digest); err != nil {
				t.Fatalf("after GC run %d, rooted blob %s: %v", runs, b.Digest, err)
			}
		}
	}
	c.say("done runs=%d removed=%d", runs, removed)
}

// getLoopRole reads every blob, round after round: each read is a miss
// (only for unreachable blobs, which it then puts back) or the complete,
// verified bytes.
func getLoopRole(t *testing.T, c *helperChild) {
	ctx := t.Context()
	fx := newGCFixture()
	s := c.openAndAwaitGo(t)
	type item struct {
		b      cachetest.Blob
		rooted bool
	}
	var items []item
	for _, b := range fx.rooted {
		items = append(items, item{b, true})
	}
	for _, b := range fx.free {
		items = append(items, item{b, false})
	}
	hits, misses, puts := 0, 0, 0
	for round := range getLoopRuns {
		for _, it := range items {
			rc, err := s.Get(ctx, it.b.Digest)
			if errors.Is(err, cache.ErrNotFound) && !it.rooted {
				misses++
				if err := s.Put(ctx, it.b.Digest, int64(len(it.b.Data)), bytes.NewReader(it.b.Data)); err != nil {
					t.Fatalf("round %d: Put %s back: %v", round, it.b.Digest, err)
				}
				puts++
				continue
			}
			if err != nil {
				t.Fatalf("round %d: Get %s (rooted %v): %v", round, it.b.Digest, it.rooted, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatalf("round %d: reading %s: %v", round, it.b.Digest, err)
			}
			if !bytes.Equal(got, it.b.Data) {
				t.Fatalf("round %d: %s: got %d bytes that differ from the %d stored", round, it.b.Digest, len(got), len(it.b.Data))
			}
			hits++
		}
	}
	c.say("done hits=%d misses=%d puts=%d", hits, misses, puts)
}

func TestGCInOneProcessReadsInAnother(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fx := newGCFixture()
	for _, b := range append(append([]cachetest.Blob{}, fx.rooted...), fx.free...) {
		if err := s.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
		im.Manifests = append(im.Manifests, fx.root)
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	gc := startHelper(t, "gc-loop", dir)
	reader := startHelper(t, "get-loop", dir)
	gc.expect("ready")
	reader.expect("ready")
	gc.send("go")
	reader.send("go")
	readerSaid := reader.expect("done ")
	reader.mustSucceed()
	gc.send("stop")
	gcSaid := gc.expect("done ")
	gc.mustSucceed()
	t.Logf("reader: %s; collector: %s", readerSaid, gcSaid)
	if removed := gcField(t, gcSaid, "removed"); removed == 0 {
		t.Errorf("the collector removed nothing (%s): the race was not exercised", gcSaid)
	}

	for _, b := range fx.rooted {
		mustVerify(t, s, b.Digest, b.Data)
	}
	rep := mustVerifyStore(t, s)
	if rep.Checked < len(fx.rooted) {
		t.Fatalf("Verify checked %d blobs, want at least the %d rooted ones", rep.Checked, len(fx.rooted))
	}
	if tmps := tempFiles(t, dir, ""); len(tmps) != 0 {
		t.Fatalf("temp files left: %v", tmps)
	}
}

// gcField reads "name=N" from a helper's message.
func gcField(t *testing.T, msg, name string) int {
	t.Helper()
	for _, f := range strings.Fields(msg) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%q: %v", msg, err)
			}
			return n
		}
	}
	t.Fatalf("%q has no %s=", msg, name)
	return 0
}

// killHelper sends SIGKILL and requires the helper to die of it.
func killHelper(t *testing.T, h *helperProc) {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := h.wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper %s after SIGKILL: %v, want it killed\noutput:\n%s", h.role, err, h.output())
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper %s ended with %v, not by SIGKILL\noutput:\n%s", h.role, err, h.output())
	}
}
