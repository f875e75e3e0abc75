//go:build linux

package localfs_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// The multi-process tests re-execute the test binary as helper processes
// that share one store directory with the test. The environment selects
// the helper's role; stdout lines starting with helperPrefix are the
// helper's messages to the test, stdin lines the test's to the helper.
const (
	helperRoleEnv   = "BUILDCACHE_TEST_HELPER"
	helperDirEnv    = "BUILDCACHE_TEST_DIR"
	helperDigestEnv = "BUILDCACHE_TEST_DIGEST"
	helperPrefix    = "helper: "

	// helperTimeout bounds every wait of a test for a helper and of a
	// helper for the test or for the other helper.
	helperTimeout = 3 * time.Minute // a hang guard, not a speed check: CI machines are shared
)

// helperRoles are what a helper process can be asked to do.
var helperRoles = map[string]func(t *testing.T, c *helperChild){
	"killed-writer": killedWriterRole, // fault_test.go
	"same-put":      samePutRole,
	"gc-loop":       gcLoopRole,
	"get-loop":      getLoopRole,
}

// TestHelperProcess is not a test: it is the body of the helper processes.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperRoleEnv)
	if role == "" {
		t.Skip("helper for the multi-process tests; it runs only when a test re-executes the binary")
	}
	fn := helperRoles[role]
	if fn == nil {
		t.Fatalf("unknown helper role %q", role)
	}
	fn(t, &helperChild{dir: os.Getenv(helperDirEnv), in: bufio.NewScanner(os.Stdin)})
}

// helperChild is the helper's side of the conversation.
type helperChild struct {
	dir string
	in  *bufio.Scanner
}

func (c *helperChild) say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, helperPrefix+format+"\n", args...)
}

// await reads stdin until the test sends word.
func (c *helperChild) await(t *testing.T, word string) {
	t.Helper()
	for c.in.Scan() {
		if c.in.Text() == word {
			return
		}
	}
	t.Fatalf("stdin closed before %q: %v", word, c.in.Err())
}

func (c *helperChild) open(t *testing.T, opts ...localfs.Option) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(c.dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// helperProc is the test's side: a running helper process.
type helperProc struct {
	t      *testing.T
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // the helper's messages, without helperPrefix
	exited chan struct{} // closed when the process has exited
	err    error         // from Wait, once exited is closed

	mu  sync.Mutex
	out bytes.Buffer // everything it printed, for failure messages
}

// startHelper re-executes the test binary in role, sharing dir.
func startHelper(t *testing.T, role, dir string, env ...string) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestHelperProcess$", "-test.timeout="+(2*helperTimeout).String())
	cmd.Env = append(os.Environ(), helperRoleEnv+"="+role, helperDirEnv+"="+dir)
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = 10 * time.Second
	h := &helperProc{t: t, role: role, cmd: cmd, lines: make(chan string, 100), exited: make(chan struct{})}
	cmd.Stdout = &helperLineWriter{h: h}
	cmd.Stderr = &helperLineWriter{h: h}
	if h.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		h.err = cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-h.exited:
		default:
			_ = cmd.Process.Kill()
			<-h.exited
		}
	})
	return h
}

// helperLineWriter splits a helper's output into lines, passing on its
// messages.
type helperLineWriter struct {
	h    *helperProc
	part []byte
}

func (w *helperLineWriter) Write(p []byte) (int, error) {
	w.h.mu.Lock()
	w.h.out.Write(p)
	w.h.mu.Unlock()
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.part[:i])
		w.part = w.part[i+1:]
		if msg, ok := strings.CutPrefix(line, helperPrefix); ok {
			select {
			case w.h.lines <- msg:
			default: // nobody reads this many messages; never block the child
			}
		}
	}
}

func (h *helperProc) output() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.out.String()
}

// expect waits for the helper's next message and requires it to start
// with prefix; it returns the rest of the message.
func (h *helperProc) expect(prefix string) string {
	h.t.Helper()
	timer := time.NewTimer(helperTimeout)
	defer timer.Stop()
	select {
	case msg := <-h.lines:
		rest, ok := strings.CutPrefix(msg, prefix)
		if !ok {
			h.t.Fatalf("helper %s said %q, want %q...\noutput:\n%s", h.role, msg, prefix, h.output())
		}
		return rest
	case <-h.exited:
		select {
		case msg := <-h.lines: // said before exiting
			if rest, ok := strings.CutPrefix(msg, prefix); ok {
				return rest
			}
		default:
		}
		h.t.Fatalf("helper %s exited (%v) before saying %q\noutput:\n%s", h.role, h.err, prefix, h.output())
	case <-timer.C:
		h.t.Fatalf("helper %s did not say %q within %v\noutput:\n%s", h.role, prefix, helperTimeout, h.output())
	}
	return ""
}

func (h *helperProc) send(line string) {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, line+"\n"); err != nil {
		h.t.Fatalf("telling helper %s %q: %v\noutput:\n%s", h.role, line, err, h.output())
	}
}

// wait waits for the helper to exit and returns how it did.
func (h *helperProc) wait() error {
	h.t.Helper()
	timer := time.NewTimer(helperTimeout)
	defer timer.Stop()
	select {
	case <-h.exited:
		return h.err
	case <-timer.C:
		h.t.Fatalf("helper %s did not exit within %v\noutput:\n%s", h.role, helperTimeout, h.output())
		return nil
	}
}

// mustSucceed waits for the helper and fails the test if it failed.
func (h *helperProc) mustSucceed() {
	h.t.Helper()
	if err := h.wait(); err != nil {
		h.t.Fatalf("helper %s: %v\noutput:\n%s", h.role, err, h.output())
	}
}

// pollUntil calls cond until it is true, failing after timeout. It is for
// state that another process changes, which no channel can announce.
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// streamSeed turns a number into a ChaCha8 seed.
func streamSeed(n uint64) (seed [32]byte) {
	binary.LittleEndian.PutUint64(seed[:], n)
	return seed
}

// genStream yields n deterministic pseudo-random bytes for seed, without
// holding them.
func genStream(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(streamSeed(seed)), n)
}

// genBlob returns the bytes of genStream(seed, n) and their digest.
func genBlob(seed uint64, n int) cachetest.Blob {
	data := make([]byte, n)
	if _, err := io.ReadFull(genStream(seed, int64(n)), data); err != nil {
		panic(err)
	}
	return cachetest.Blob{Data: data, Digest: cachetest.Digest(data)}
}

// streamDigest is the digest of genStream(seed, n).
func streamDigest(seed uint64, n int64) v1.Hash {
	h := sha256.New()
	if _, err := io.Copy(h, genStream(seed, n)); err != nil {
		panic(err)
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// hookReader calls before ahead of every Read with the bytes read so far.
type hookReader struct {
	r      io.Reader
	n      int64
	before func(n int64) error
}

func (r *hookReader) Read(p []byte) (int, error) {
	if err := r.before(r.n); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}

// tempFiles lists the temp files in the store's private temp dir whose
// names start with prefix.
func tempFiles(t testing.TB, dir, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, ".buildcache", "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// mustVerify reads d from s and requires exactly want.
func mustVerify(t testing.TB, s cache.LayerCache, d v1.Hash, want []byte) {
	t.Helper()
	rc, err := s.Get(t.Context(), d)
	if err != nil {
		t.Fatalf("Get %s: %v", d, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", d, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: read %d bytes that differ from the %d stored", d, len(got), len(want))
	}
}

// mustVerifyStore runs Verify and requires no bad and no missing blob.
func mustVerifyStore(t testing.TB, s *localfs.Store) localfs.VerifyReport {
	t.Helper()
	rep, err := s.Verify(t.Context())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(rep.Bad) > 0 || len(rep.Missing) > 0 {
		t.Fatalf("Verify found bad blobs %v and missing blobs %v", rep.Bad, rep.Missing)
	}
	return rep
}

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
	s := c.open(t)
	c.say("ready")
	c.await(t, "go")
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
	s := c.open(t)
	c.say("ready")
	c.await(t, "go")
	stop := make(chan struct{})
	go func() {
		for c.in.Scan() {
			if c.in.Text() == "stop" {
				break
			}
		}
		close(stop) // "stop", or the test went away
	}()
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
	s := c.open(t)
	c.say("ready")
	c.await(t, "go")
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
