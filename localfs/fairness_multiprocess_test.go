//go:build linux

package localfs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// --- a writer among collectors running back to back ----------------------

const (
	// collectorRunsEnv names the file a collect-loop helper appends a
	// byte to at the end of each run, still holding gc.lock: its size is
	// the runs done.
	collectorRunsEnv = "BUILDCACHE_TEST_RUNS"

	fairnessBlobs  = 2000 // what each collector run scans: it is what makes a run last
	fairnessWaits  = 5    // the writer's turns
	fairnessGiveUp = 25   // collector runs a writer may watch go by before it counts as starved
)

// collectLoopRole runs GC back to back, as a cron job and a busy
// eviction do, until the test says "stop".
func collectLoopRole(t *testing.T, c *helperChild) {
	ctx := t.Context()
	runs, err := os.OpenFile(os.Getenv(collectorRunsEnv), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer runs.Close()
	s := c.openAndAwaitGo(t)
	stop := c.stopped()
	counted := localfs.GCProgress(func(done, total int) {
		if done == total { // the last call of a run, under the lock
			if _, err := runs.Write([]byte{'.'}); err != nil {
				t.Error(err)
			}
		}
	})
	for n := 0; ; n++ {
		select {
		case <-stop:
			c.say("done runs=%d", n)
			return
		default:
		}
		if _, err := s.GC(ctx, counted); err != nil {
			t.Fatalf("GC: %v", err)
		}
	}
}

// TestWriterGetsInWhileACollectorLoops: with another process collecting
// back to back, a writer asking for gc.lock gets it after at most the
// collector run in progress and one more (see lockGCShared), counted in
// runs rather than seconds; a writer that sees fairnessGiveUp runs go by
// is starved, as writers were for minutes (issue 19, item 16).
func TestWriterGetsInWhileACollectorLoops(t *testing.T) {
	s := openAt(t, t.TempDir())
	dir := s.Dir()
	for i := range fairnessBlobs {
		// Written directly, as Put would leave them: GC scans them on
		// every run and keeps them all (no TTL, no budget).
		data := fmt.Appendf(nil, "blob %d", i)
		if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", cachetest.Digest(data).Hex), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runsPath := filepath.Join(t.TempDir(), "runs")
	if err := os.WriteFile(runsPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	runs := func() int64 {
		info, err := os.Stat(runsPath)
		if err != nil {
			panic(err)
		}
		return info.Size()
	}

	h := startHelper(t, "collect-loop", dir, collectorRunsEnv+"="+runsPath)
	h.expect("ready")
	h.send("go")
	if !pollUntil(helperTimeout, func() bool { return runs() >= 2 }) {
		t.Fatalf("the collector did not run\noutput:\n%s", h.output())
	}
	var waited []int64
	for turn := range fairnessWaits {
		// Ask just after a run ended, when the next one has begun: the
		// writer has a run to wait for.
		last := runs()
		if !pollUntil(helperTimeout, func() bool { return runs() > last }) {
			t.Fatalf("the collector stopped running\noutput:\n%s", h.output())
		}
		ctx, cancel := context.WithCancel(t.Context())
		before := runs()
		guarded := make(chan struct{})
		go func() { // the hang guard, in collector runs
			defer close(guarded)
			pollUntil(helperTimeout, func() bool {
				return ctx.Err() != nil || runs()-before > fairnessGiveUp
			})
			cancel()
		}()
		unlock, err := s.LockGCShared(ctx)
		held := runs()
		cancel()
		<-guarded
		if err != nil {
			t.Fatalf("turn %d: the writer still waited for gc.lock after %d collector runs: %v", turn, runs()-before, err)
		}
		unlock()
		waited = append(waited, held-before)
	}
	h.send("stop")
	said := h.expect("done ")
	h.mustSucceed()
	t.Logf("collector: %s; the writer waited for %v runs", said, waited)
	var total int64
	for turn, n := range waited {
		if n > 2 {
			t.Errorf("turn %d: the writer waited for %d collector runs, want at most 2", turn, n)
		}
		total += n
	}
	if total == 0 {
		t.Errorf("the writer never met a collector run: the test did not exercise the wait")
	}
}
