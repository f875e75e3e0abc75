//go:build linux

package localfs_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// outsideFile is a file outside the store that a co-user of the store's
// directory points a link at; the store must leave it exactly as it was.
type outsideFile struct {
	path  string
	data  []byte
	mtime time.Time
}

func newOutsideFile(t *testing.T, name string, data []byte) outsideFile {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	return outsideFile{path: p, data: data, mtime: old}
}

// unchanged fails the test if the file was removed, rewritten or touched.
func (o outsideFile) unchanged(t *testing.T, after string) {
	t.Helper()
	info, err := os.Lstat(o.path)
	if err != nil {
		t.Fatalf("after %s, the file outside the store: %v", after, err)
	}
	got, err := os.ReadFile(o.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, o.data) {
		t.Errorf("after %s, the file outside the store was rewritten", after)
	}
	if !info.ModTime().Equal(o.mtime) {
		t.Errorf("after %s, the file outside the store has mtime %v, want %v untouched", after, info.ModTime(), o.mtime)
	}
}

// linkBlob replaces the entry of b (present or not) with a link to target.
func linkBlob(t *testing.T, dir string, b cachetest.Blob, target string) string {
	t.Helper()
	p := filepath.Join(dir, "blobs", "sha256", b.Digest.Hex)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func isLink(t *testing.T, p string) bool {
	t.Helper()
	info, err := os.Lstat(p)
	return err == nil && info.Mode()&os.ModeSymlink != 0
}

// TestBlobReplacedByLink: a blob entry replaced by a link to a file
// outside the store (of the blob's size, as a co-user trying to get the
// store to serve it would make it) is corrupt for every operation, and the
// outside file is never read into a stream, touched or removed.
func TestBlobReplacedByLink(t *testing.T) {
	b := genBlob(9100, 4096)
	// Same size as the blob, other bytes.
	other := genBlob(9101, 4096)

	t.Run("Get", func(t *testing.T) {
		dir := t.TempDir()
		s, err := localfs.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		putBlob(t, s, b)
		out := newOutsideFile(t, "secret", other.Data)
		p := linkBlob(t, dir, b, out.path)
		rc, err := s.Get(t.Context(), b.Digest)
		if err == nil {
			got, _ := io.ReadAll(rc)
			rc.Close()
			t.Fatalf("Get of a linked entry opened it (read %d bytes), want ErrCorrupt before any byte", len(got))
		}
		if !errors.Is(err, cache.ErrCorrupt) {
			t.Errorf("Get = %v, want ErrCorrupt", err)
		}
		if isLink(t, p) {
			t.Error("the link is still in place after Get")
		}
		out.unchanged(t, "Get")
		if s.Stats().Corruptions == 0 {
			t.Error("the linked entry was not counted as a corruption")
		}
	})

	t.Run("Stat", func(t *testing.T) {
		dir := t.TempDir()
		s, err := localfs.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := newOutsideFile(t, "secret", other.Data)
		linkBlob(t, dir, b, out.path)
		if _, err := s.Stat(t.Context(), b.Digest); !errors.Is(err, cache.ErrCorrupt) {
			t.Errorf("Stat = %v, want ErrCorrupt", err)
		}
		out.unchanged(t, "Stat")
	})

	t.Run("Put of a matching size stores the blob", func(t *testing.T) {
		dir := t.TempDir()
		s, err := localfs.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := newOutsideFile(t, "secret", other.Data)
		p := linkBlob(t, dir, b, out.path)
		putBlob(t, s, b)
		if isLink(t, p) {
			t.Fatal("Put returned with the link still in place: nothing was stored")
		}
		mustVerify(t, s, b.Digest, b.Data)
		out.unchanged(t, "Put")
	})

	t.Run("Verify reports it and removes the link", func(t *testing.T) {
		dir := t.TempDir()
		s, err := localfs.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		good := genBlob(9102, 100)
		putBlob(t, s, good)
		out := newOutsideFile(t, "secret", other.Data)
		p := linkBlob(t, dir, b, out.path)
		dangling := genBlob(9103, 10)
		linkBlob(t, dir, dangling, filepath.Join(t.TempDir(), "nothing-here"))

		rep, err := s.Verify(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Checked != 1 || len(rep.Bad) != 2 || rep.Removed != 0 {
			t.Fatalf("Verify = %+v, want 1 checked and both links reported bad", rep)
		}
		for _, bad := range rep.Bad {
			if !errors.Is(bad.Err, cache.ErrCorrupt) {
				t.Errorf("Verify reported %s with %v, want ErrCorrupt", bad.Digest, bad.Err)
			}
		}
		if !isLink(t, p) {
			t.Error("Verify without VerifyRemove removed the link")
		}
		rep, err = s.Verify(t.Context(), localfs.VerifyRemove())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Bad) != 2 || rep.Removed != 2 {
			t.Fatalf("Verify(VerifyRemove) = %+v, want both links removed", rep)
		}
		if isLink(t, p) {
			t.Error("VerifyRemove left the link")
		}
		out.unchanged(t, "Verify")
		mustVerifyStore(t, s)
	})

	t.Run("GC and Delete remove the link, not its target", func(t *testing.T) {
		dir := t.TempDir()
		s, err := localfs.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := newOutsideFile(t, "secret", other.Data)
		p := linkBlob(t, dir, b, out.path)
		if _, err := s.GC(t.Context(), localfs.GCMaxBytes(1)); err != nil {
			t.Fatal(err)
		}
		out.unchanged(t, "GC")
		if err := s.Delete(t.Context(), b.Digest); err != nil {
			t.Fatal(err)
		}
		if isLink(t, p) {
			t.Error("Delete left the link")
		}
		out.unchanged(t, "Delete")
	})
}

// TestLinkedTempDirIsNotSwept: a temp directory replaced by a link to a
// directory outside the store holding old *.tmp files: Open and GC must
// not remove them, and the store gets a real temp directory back.
func TestLinkedTempDirIsNotSwept(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	victimDir := t.TempDir()
	out := newOutsideFile(t, "x", []byte("not yours"))
	victim := filepath.Join(victimDir, "precious.tmp")
	if err := os.Rename(out.path, victim); err != nil {
		t.Fatal(err)
	}
	out.path = victim
	tmp := filepath.Join(dir, ".buildcache", "tmp")
	relink := func() {
		t.Helper()
		if err := os.RemoveAll(tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(victimDir, tmp); err != nil {
			t.Fatal(err)
		}
	}

	relink()
	if _, err := s.GC(t.Context()); err != nil {
		t.Fatal(err)
	}
	out.unchanged(t, "GC with a linked temp dir")

	relink()
	s2, err := localfs.Open(dir, localfs.WithTempGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	out.unchanged(t, "Open with a linked temp dir")
	if info, err := os.Lstat(tmp); err != nil || !info.IsDir() {
		t.Fatalf("Open left %s as %v, %v; want a real directory", tmp, info.Mode(), err)
	}
	putBlob(t, s2, genBlob(9110, 1000)) // writes go into the store
	if entries, _ := os.ReadDir(victimDir); len(entries) != 1 {
		t.Errorf("the outside directory has %d entries, want only its own file", len(entries))
	}
}

// TestLinkedInternalFiles: lock files and index.json replaced by links are
// never followed out of the store.
func TestLinkedInternalFiles(t *testing.T) {
	t.Run("lock files", func(t *testing.T) {
		dir := t.TempDir()
		s, err := localfs.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		outside := t.TempDir()
		for _, name := range []string{"gc.lock", "index.lock"} {
			p := filepath.Join(dir, ".buildcache", name)
			os.Remove(p)
			if err := os.Symlink(filepath.Join(outside, name), p); err != nil { // dangling: O_CREAT would create it
				t.Fatal(err)
			}
		}
		os.Remove(filepath.Join(dir, "index.json.lock"))
		if err := os.Symlink(filepath.Join(outside, "index.json.lock"), filepath.Join(dir, "index.json.lock")); err != nil {
			t.Fatal(err)
		}
		putBlob(t, s, genBlob(9120, 100))
		if _, err := s.GC(t.Context(), localfs.GCMaxBytes(1)); err != nil {
			t.Fatal(err)
		}
		if err := putRoot(t, s, genBlob(9121, 100)); err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Errorf("the store created %d files outside itself through its lock links", len(entries))
		}
	})
	t.Run("index.json", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := localfs.Open(dir); err != nil {
			t.Fatal(err)
		}
		out := newOutsideFile(t, "index.json", []byte(`{"schemaVersion":2,"manifests":[]}`))
		ip := filepath.Join(dir, "index.json")
		os.Remove(ip)
		if err := os.Symlink(out.path, ip); err != nil {
			t.Fatal(err)
		}
		if _, err := localfs.Open(dir); err == nil {
			t.Error("Open read index.json through a link")
		}
		out.unchanged(t, "Open")
	})
	t.Run("blobs directory", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := localfs.Open(dir); err != nil {
			t.Fatal(err)
		}
		outside := t.TempDir()
		out := newOutsideFile(t, "x", []byte("x"))
		victim := filepath.Join(outside, genBlob(9130, 1).Digest.Hex)
		if err := os.Rename(out.path, victim); err != nil {
			t.Fatal(err)
		}
		out.path = victim
		bd := filepath.Join(dir, "blobs", "sha256")
		if err := os.RemoveAll(bd); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, bd); err != nil {
			t.Fatal(err)
		}
		if _, err := localfs.Open(dir); err == nil {
			t.Error("Open accepted blobs/sha256 as a link to another directory, where GC would remove files")
		}
		out.unchanged(t, "Open")
	})
}
