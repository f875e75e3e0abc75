//go:build linux

package localfs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/signal"
	"syscall"
	"testing"

	"github.com/buildcache/buildcache/localfs"
)

// stalledSource yields n bytes of genStream(seed, n) and then blocks in
// Read until release is closed, as a silent upstream does: no context
// reaches it. stalled is closed when it blocks, all n bytes read.
type stalledSource struct {
	r       io.Reader
	stalled chan struct{}
	release chan struct{}
}

const stalledBytes = 8 << 20

func newStalledSource() *stalledSource {
	return &stalledSource{r: genStream(77, stalledBytes), stalled: make(chan struct{}), release: make(chan struct{})}
}

func (s *stalledSource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 || err == nil {
		return n, nil
	}
	close(s.stalled)
	<-s.release
	return 0, io.ErrUnexpectedEOF
}

// stalledPut starts a Put of a 32 MiB blob whose source stalls a quarter
// of the way, and returns once the source has stalled, with the Put's
// result to come.
func stalledPut(ctx context.Context, s *localfs.Store, src *stalledSource) <-chan error {
	d := streamDigest(78, 4*stalledBytes) // never reached
	done := make(chan error, 1)
	go func() { done <- s.Put(ctx, d, 4*stalledBytes, src) }()
	<-src.stalled
	return done
}

// sigtermWriterRole is a server's shutdown: a download that outlives the
// request that began it (its context is not the one SIGTERM cancels)
// stalls in its store Put; on SIGTERM the process closes the store and
// exits at once, as `buildcache serve` does.
func sigtermWriterRole(t *testing.T, c *helperChild) {
	stopped, stop := signal.NotifyContext(t.Context(), syscall.SIGTERM)
	defer stop()
	s := c.open(t)
	src := newStalledSource()
	stalledPut(context.Background(), s, src)
	c.say("stalled")
	<-stopped.Done()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c.say("closed")
}

// TestSIGTERMLeavesNoTempFile: a process that closes its store on
// SIGTERM and exits, with a Put in progress whose source is silent,
// leaves no temp file (issue 19, item 15: 38 MB were left, until a sweep
// a minute later).
func TestSIGTERMLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "sigterm-writer", dir)
	h.expect("stalled")
	if tmps := tempFiles(t, dir, ""); len(tmps) == 0 {
		t.Fatal("no temp file while the Put is in progress: the test exercises nothing")
	}
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.expect("closed")
	h.mustSucceed()
	if tmps := tempFiles(t, dir, ""); len(tmps) != 0 {
		t.Fatalf("temp files left after a clean shutdown: %v", tmps)
	}
}

// TestCloseAbandonsWrites: Close removes the temp file of a Put in
// progress before it returns, though the Put's source is stalled and its
// context alive; the Put fails with ErrClosed once its source returns,
// and Puts after Close fail at once. Reads go on.
func TestCloseAbandonsWrites(t *testing.T) {
	s := openAt(t, t.TempDir())
	dir := s.Dir()
	kept := storeBytes(t, s, []byte("stored before Close"))
	src := newStalledSource()
	put := stalledPut(t.Context(), s, src)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if tmps := tempFiles(t, dir, ""); len(tmps) != 0 {
		t.Errorf("temp files left when Close returned: %v", tmps)
	}
	close(src.release)
	if err := <-put; !errors.Is(err, localfs.ErrClosed) || !errors.Is(err, context.Canceled) {
		t.Errorf("the abandoned Put: %v, want ErrClosed, a cancellation", err)
	}
	b := genBlob(79, 1024)
	if err := s.PutDeferred(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); !errors.Is(err, localfs.ErrClosed) {
		t.Errorf("PutDeferred after Close: %v, want ErrClosed", err)
	}
	mustVerify(t, s, kept, []byte("stored before Close"))
	if tmps := tempFiles(t, dir, ""); len(tmps) != 0 {
		t.Errorf("temp files left: %v", tmps)
	}
}

// TestCancelledPutDropsItsTempFile: the temp file of a Put whose context
// is cancelled goes at once, while its source is still stalled, not
// when the source returns; the Put then fails with the cancellation.
func TestCancelledPutDropsItsTempFile(t *testing.T) {
	s := newStore(t)
	dir := s.Dir()
	ctx, cancel := context.WithCancel(t.Context())
	src := newStalledSource()
	put := stalledPut(ctx, s, src)
	if tmps := tempFiles(t, dir, ""); len(tmps) == 0 {
		t.Fatal("no temp file while the Put is in progress: the test exercises nothing")
	}
	cancel()
	gone := pollUntil(helperTimeout, func() bool { return len(tempFiles(t, dir, "")) == 0 })
	close(src.release)
	if !gone {
		t.Errorf("the cancelled Put's temp file stayed while its source was stalled: %v", tempFiles(t, dir, ""))
	}
	if err := <-put; !errors.Is(err, context.Canceled) || errors.Is(err, localfs.ErrClosed) {
		t.Errorf("the cancelled Put: %v, want its context's cancellation", err)
	}
	if tmps := tempFiles(t, dir, ""); len(tmps) != 0 {
		t.Errorf("temp files left: %v", tmps)
	}
}
