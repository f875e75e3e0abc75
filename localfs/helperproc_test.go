//go:build linux

package localfs_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

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
	"killed-writer":  killedWriterRole, // fault_test.go
	"same-put":       samePutRole,
	"gc-loop":        gcLoopRole,
	"get-loop":       getLoopRole,
	"lease-holder":   leaseHolderRole,   // lease_test.go
	"root-writer":    rootWriterRole,    // scale_multiprocess_test.go
	"opener":         openerRole,        // newstore_multiprocess_test.go
	"collect-loop":   collectLoopRole,   // fairness_multiprocess_test.go
	"sigterm-writer": sigtermWriterRole, // shutdown_test.go
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

// stopped is closed when the test says "stop", or goes away. Nothing
// else may read stdin after it is called.
func (c *helperChild) stopped() <-chan struct{} {
	stop := make(chan struct{})
	go func() {
		for c.in.Scan() {
			if c.in.Text() == "stop" {
				break
			}
		}
		close(stop)
	}()
	return stop
}

func (c *helperChild) open(t *testing.T, opts ...localfs.Option) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(c.dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openAndAwaitGo opens the store, says "ready" and waits for the test's
// "go", so that several helpers start their work together.
func (c *helperChild) openAndAwaitGo(t *testing.T) *localfs.Store {
	t.Helper()
	s := c.open(t)
	c.say("ready")
	c.await(t, "go")
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
