package localfs_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// An ingestion writes its blob once: while it is written, the store's
// temp directory holds one file of the bytes so far and nothing else
// does, and Commit renames that very file (its inode) into blobs/, whose
// bytes the store counts once in BytesIn. A store closed with one in
// progress leaves no temp file, and a new ingestion of a killed writer's
// leftover is swept like a Put's.
func TestIngestWritesOnce(t *testing.T) {
	s := newStore(t)
	b := cachetest.NewBlob(601, 3<<20)
	in, err := s.Ingest(t.Context(), b.Digest, int64(len(b.Data)))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := in.Write(b.Data[:1<<20]); err != nil {
		t.Fatal(err)
	}
	temps := regularFiles(t, filepath.Join(s.Dir(), ".buildcache", "tmp"))
	if len(temps) != 1 {
		t.Fatalf("temp files while ingesting: %v, want one", temps)
	}
	var tempIno uint64
	for name, st := range temps {
		if st.Size() != 1<<20 {
			t.Fatalf("temp file %s holds %d bytes, want the %d written", name, st.Size(), 1<<20)
		}
		tempIno = st.Sys().(*syscall.Stat_t).Ino
	}
	if _, err := in.Write(b.Data[1<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := in.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(s.Dir(), "blobs", "sha256", b.Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	if ino := st.Sys().(*syscall.Stat_t).Ino; ino != tempIno {
		t.Errorf("the committed blob is inode %d, the file written was %d: the blob was copied", ino, tempIno)
	}
	if got := s.Stats().BytesIn; got != uint64(len(b.Data)) {
		t.Errorf("BytesIn = %d, want the blob's %d bytes, written once", got, len(b.Data))
	}
	if left := regularFiles(t, filepath.Join(s.Dir(), ".buildcache", "tmp")); len(left) != 0 {
		t.Errorf("temp files after Commit: %v", left)
	}
}

// Close of the store aborts an ingestion in progress: its temp file goes,
// and its writer fails.
func TestStoreCloseAbortsIngestion(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := cachetest.NewBlob(602, 1<<20)
	in, err := s.Ingest(t.Context(), b.Digest, int64(len(b.Data)))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := in.Write(b.Data[:1000]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left := regularFiles(t, filepath.Join(dir, ".buildcache", "tmp")); len(left) != 0 {
		t.Errorf("temp files after Close: %v", left)
	}
	if _, err := in.Write(b.Data[1000:]); err == nil {
		if err := in.Commit(t.Context()); err == nil {
			t.Error("an ingestion committed after its store was closed")
		}
	}
}

func regularFiles(t *testing.T, dir string) map[string]os.FileInfo {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]os.FileInfo{}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			out[e.Name()] = info
		}
	}
	return out
}
