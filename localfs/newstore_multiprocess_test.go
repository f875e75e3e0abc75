//go:build linux

package localfs_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/buildcache/buildcache/localfs"
)

// --- processes creating the same new store at once ------------------------

// newStoreDirs is how many new stores the openers race to create: the
// moment a store is half made is short, and the test must see one.
const newStoreDirs = 30

func newStoreDir(parent string, i int) string {
	return filepath.Join(parent, "store-"+strconv.Itoa(i))
}

// openerRole opens each new store in turn once the test says "go", as
// every process of a CI fleet pointed at a fresh cache directory does.
func openerRole(t *testing.T, c *helperChild) {
	c.say("ready")
	c.await(t, "go")
	for i := range newStoreDirs {
		s, err := localfs.Open(newStoreDir(c.dir, i))
		if err != nil {
			t.Fatalf("store %d: %v", i, err)
		}
		if _, err := s.Index(t.Context()); err != nil {
			t.Fatalf("store %d: Index: %v", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("store %d: Close: %v", i, err)
		}
	}
	c.say("done")
}

// TestProcessesCreatingOneStoreAtOnce: two processes open the same new
// directories at once (missing ones, and empty ones as a mount point
// is). Both succeed, and a third process watching never sees a directory
// that holds something and yet is not a store by IsStore: that is how the
// command line told a store being created from someone else's directory,
// and refused the directory (issue 19, item 14).
func TestProcessesCreatingOneStoreAtOnce(t *testing.T) {
	parent := t.TempDir()
	for i := 0; i < newStoreDirs; i += 2 {
		if err := os.Mkdir(newStoreDir(parent, i), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var hs []*helperProc
	for range 2 {
		hs = append(hs, startHelper(t, "opener", parent))
	}
	for _, h := range hs {
		h.expect("ready")
	}
	for _, h := range hs {
		h.send("go")
	}
	running := func() bool {
		for _, h := range hs {
			select {
			case <-h.exited:
			default:
				return true
			}
		}
		return false
	}
	var halfMade []string // what a directory held when it was not a store
	for running() {
		for i := range newStoreDirs {
			dir := newStoreDir(parent, i)
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) == 0 || localfs.IsStore(dir) {
				continue
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			halfMade = append(halfMade, filepath.Base(dir)+": "+strconv.Quote(names[0])+"…")
		}
	}
	for _, h := range hs {
		h.expect("done")
		h.mustSucceed()
	}
	if len(halfMade) > 0 {
		t.Errorf("%d times a store being created was not one by IsStore, e.g. %v", len(halfMade), halfMade[:min(3, len(halfMade))])
	}
	for i := range newStoreDirs {
		dir := newStoreDir(parent, i)
		for _, name := range []string{"oci-layout", "index.json", "blobs/sha256"} {
			if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
				t.Errorf("store %d: %v", i, err)
			}
		}
		s := openAt(t, dir)
		mustVerifyStore(t, s)
	}
}
