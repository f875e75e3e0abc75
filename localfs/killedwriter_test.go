//go:build linux

package localfs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// --- a writer killed mid-Put ----------------------------------------------

const (
	killedWriterSize    = 64 << 20 // what the writer announces
	killedWriterWritten = 8 << 20  // what it writes before it stalls
)

// killedWriterSmall are the blobs the killed writer stores completely.
func killedWriterSmall() []cachetest.Blob {
	var bs []cachetest.Blob
	for i := range 3 {
		bs = append(bs, genBlob(uint64(600+i), 64<<10))
	}
	return bs
}

// killedWriterRole stores a few small blobs, then starts a 64 MiB Put
// whose input stalls after 8 MiB, and waits there to be killed.
func killedWriterRole(t *testing.T, c *helperChild) {
	ctx := t.Context()
	s := c.open(t)
	for _, b := range killedWriterSmall() {
		if err := s.Put(ctx, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
			t.Fatal(err)
		}
	}
	c.say("ready")
	d := streamDigest(64, killedWriterSize)
	r := &hookReader{r: genStream(64, killedWriterSize), before: func(n int64) error {
		if n < killedWriterWritten {
			return nil
		}
		c.say("writing %s", d)
		select {
		case <-time.After(helperTimeout):
			return errors.New("stalled writer was never killed")
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	err := s.Put(ctx, d, killedWriterSize, r)
	t.Fatalf("the writer was not killed; Put returned %v", err)
}

func TestKilledWriterLeavesNoBlob(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "killed-writer", dir)
	h.expect("ready")
	d, err := cache.ParseDigest(h.expect("writing "))
	if err != nil {
		t.Fatal(err)
	}
	tmpDir := filepath.Join(dir, ".buildcache", "tmp")
	var temp string
	if !pollUntil(helperTimeout, func() bool {
		for _, name := range tempFiles(t, dir, d.Hex[:16]) {
			if info, err := os.Stat(filepath.Join(tmpDir, name)); err == nil && info.Size() > 0 {
				temp = filepath.Join(tmpDir, name)
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no temp file with data for %s appeared in %s\nhelper output:\n%s", d, tmpDir, h.output())
	}

	// While its writer lives, the temp file survives an Open and a GC that
	// would sweep any abandoned one.
	expectTempKept(t, dir, temp)

	killHelper(t, h)

	info, err := os.Stat(temp)
	if err != nil {
		t.Fatalf("the killed writer's temp file is gone before any sweep: %v", err)
	}
	if info.Size() < killedWriterWritten {
		t.Errorf("the killed writer's temp file holds %d bytes, want at least the %d it wrote", info.Size(), killedWriterWritten)
	}
	t.Logf("SIGKILL left %s, %d bytes", filepath.Base(temp), info.Size())

	s := expectTempSwept(t, dir, temp)
	small := killedWriterSmall()
	checkAfterNoSpace(t, s, small, d)
	var walked []v1.Hash
	if err := s.Walk(t.Context(), func(h v1.Hash, _ int64) error { walked = append(walked, h); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(walked) != len(small) {
		t.Fatalf("Walk after the kill lists %v, want the %d small blobs", walked, len(small))
	}
}

func TestOpenKeepsTempFileOfLiveWriter(t *testing.T) {
	dir := t.TempDir()
	if _, err := localfs.Open(dir); err != nil {
		t.Fatal(err)
	}
	temp := filepath.Join(dir, ".buildcache", "tmp", "x.tmp")
	if err := os.WriteFile(temp, []byte("half a layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The writer's lock, on its own descriptor, as a writer holds it.
	f, err := os.Open(temp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(temp, past, past); err != nil {
		t.Fatal(err)
	}

	expectTempKept(t, dir, temp)

	// The writer dies: its lock goes with its descriptor, and the next
	// Open sweeps the file.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	expectTempSwept(t, dir, temp)
}

// expectTempKept opens dir with no grace period for temp files and runs
// GC: temp, which a live writer holds locked, must survive both.
func expectTempKept(t *testing.T, dir, temp string) {
	t.Helper()
	s, err := localfs.Open(dir, localfs.WithTempGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(temp); err != nil {
		t.Fatalf("Open swept the temp file of a live writer: %v", err)
	}
	if rep, err := s.GC(t.Context()); err != nil || rep.TempsRemoved != 0 {
		t.Fatalf("GC with a live writer: %+v, %v; want no temp removed", rep, err)
	}
	if _, err := os.Stat(temp); err != nil {
		t.Fatalf("GC swept the temp file of a live writer: %v", err)
	}
}

// expectTempSwept opens dir with no grace period for temp files: temp,
// which no live writer holds, must be gone.
func expectTempSwept(t *testing.T, dir, temp string) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(dir, localfs.WithTempGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(temp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open kept a temp file that no writer holds, older than the grace period: %v", err)
	}
	return s
}
