//go:build linux

package localfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// --- a full disk ----------------------------------------------------------

// putRoot puts b and makes it a root in index.json, so that no eviction
// may remove it: what is asserted to survive a full disk is the failure
// handling, not an LRU choice.
func putRoot(t *testing.T, s *localfs.Store, b cachetest.Blob) error {
	t.Helper()
	if err := s.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		return err
	}
	if err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
		im.Manifests = append(im.Manifests, v1.Descriptor{MediaType: types.OCILayer, Digest: b.Digest, Size: int64(len(b.Data))})
		return nil
	}); err != nil {
		t.Fatalf("UpdateIndex with room to spare: %v", err)
	}
	return nil
}

// openWithRoots opens a store in mnt/store and puts n blobs of size
// bytes, made from seeds seed, seed+1, ..., as roots (putRoot).
func openWithRoots(t *testing.T, mnt string, n int, seed uint64, size int) (*localfs.Store, []cachetest.Blob) {
	t.Helper()
	s, err := localfs.Open(filepath.Join(mnt, "store"))
	if err != nil {
		t.Fatal(err)
	}
	var roots []cachetest.Blob
	for i := range n {
		b := genBlob(seed+uint64(i), size)
		if err := putRoot(t, s, b); err != nil {
			t.Fatal(err)
		}
		roots = append(roots, b)
	}
	return s, roots
}

// countingReader counts what is read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}

// checkAfterNoSpace asserts the state a failed write must leave: no temp
// file, every earlier blob complete and verified, the failed ones absent.
func checkAfterNoSpace(t *testing.T, s *localfs.Store, stored []cachetest.Blob, failed ...v1.Hash) {
	t.Helper()
	if tmps := tempFiles(t, s.Dir(), ""); len(tmps) != 0 {
		t.Errorf("temp files left after the failed write: %v", tmps)
	}
	for _, b := range stored {
		mustVerify(t, s, b.Digest, b.Data)
	}
	rep := mustVerifyStore(t, s)
	if rep.Checked != len(stored) {
		t.Errorf("Verify checked %d blobs, want the %d stored", rep.Checked, len(stored))
	}
	for _, d := range failed {
		if _, err := s.Stat(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
			t.Errorf("Stat of the blob whose write failed: %v, want ErrNotFound", err)
		}
	}
}

const tmpfsSize = 8 << 20

var tmpfsOpts = fmt.Sprintf("size=%d", tmpfsSize)

func TestFullDisk(t *testing.T) {
	t.Run("statfs check refuses before writing", func(t *testing.T) {
		mnt := mountTmpfs(t, tmpfsOpts)
		s, _ := openWithRoots(t, mnt, 0, 0, 0)
		// Just under 1 MiB, so the last pages are never exactly used up
		// and index.json (one page) always has room until a Put fails.
		const size = 1<<20 - 1000
		var stored []cachetest.Blob
		var failErr error
		var failed cachetest.Blob
		var read int64
		var availBefore, availAfter int64
		for i := range 2 * tmpfsSize / size {
			b := genBlob(uint64(1000+i), size)
			r := &countingReader{r: bytes.NewReader(b.Data)}
			availBefore = availBytes(t, mnt)
			if err := s.Put(t.Context(), b.Digest, size, r); err != nil {
				failErr, failed, read = err, b, r.n
				availAfter = availBytes(t, mnt)
				break
			}
			if err := s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
				im.Manifests = append(im.Manifests, v1.Descriptor{MediaType: types.OCILayer, Digest: b.Digest, Size: size})
				return nil
			}); err != nil {
				t.Fatalf("UpdateIndex with room to spare: %v", err)
			}
			stored = append(stored, b)
		}
		if failErr == nil {
			t.Fatalf("put %d blobs of %d bytes on a %d-byte tmpfs without an error", len(stored), size, tmpfsSize)
		}
		t.Logf("Put %d failed: %v", len(stored)+1, failErr)
		if len(stored) < 5 {
			t.Fatalf("only %d blobs of %d bytes fit on a %d-byte tmpfs", len(stored), size, tmpfsSize)
		}
		if !errors.Is(failErr, cache.ErrNoSpace) {
			t.Fatalf("Put on a full disk: %v, want ErrNoSpace", failErr)
		}
		if errors.Is(failErr, syscall.ENOSPC) {
			t.Fatalf("Put on a full disk got as far as ENOSPC (%v): the statfs check should have refused it first", failErr)
		}
		if read != 0 {
			t.Errorf("the refused Put read %d bytes of its input; it must fail before reading", read)
		}
		if availAfter != availBefore {
			t.Errorf("the refused Put changed free space from %d to %d bytes", availBefore, availAfter)
		}
		checkAfterNoSpace(t, s, stored, failed.Digest)
	})

	t.Run("disk fills during two writes that each fit alone", func(t *testing.T) {
		mnt := mountTmpfs(t, tmpfsOpts)
		s, stored := openWithRoots(t, mnt, 3, 2000, 1<<20)
		// Each fits in what is free; both together do not.
		size := int(availBytes(t, mnt) * 3 / 5)
		blobs := []cachetest.Blob{genBlob(2100, size), genBlob(2101, size)}

		// Hold both writers at their first read until both have started:
		// each has then passed the free-space check, with the other's bytes
		// not yet written, and both write into the same free space.
		var started sync.WaitGroup
		started.Add(len(blobs))
		gate := make(chan struct{})
		errs := make([]error, len(blobs))
		var wg sync.WaitGroup
		for i, b := range blobs {
			var once sync.Once
			r := &hookReader{r: bytes.NewReader(b.Data), before: func(int64) error {
				once.Do(started.Done)
				select {
				case <-gate:
					return nil
				case <-time.After(helperTimeout):
					return errors.New("the other writer never started")
				}
			}}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer once.Do(started.Done) // a Put that never reads must not hang the test
				errs[i] = s.Put(t.Context(), b.Digest, int64(size), r)
			}()
		}
		started.Wait()
		close(gate)
		wg.Wait()

		var failed []v1.Hash
		for i, err := range errs {
			if err == nil {
				stored = append(stored, blobs[i])
				continue
			}
			t.Logf("Put %d of %d bytes: %v", i, size, err)
			failed = append(failed, blobs[i].Digest)
			if !errors.Is(err, cache.ErrNoSpace) {
				t.Errorf("Put that ran out of disk: %v, want ErrNoSpace", err)
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Put failed with %v, not with ENOSPC from the write itself: the during-write path was not reached", err)
			}
		}
		if len(failed) == 0 {
			t.Fatalf("two concurrent Puts of %d bytes each fit in %d bytes of tmpfs", size, tmpfsSize)
		}
		checkAfterNoSpace(t, s, stored, failed...)
	})

	t.Run("disk filled by another program during the write", func(t *testing.T) {
		mnt := mountTmpfs(t, tmpfsOpts)
		s, stored := openWithRoots(t, mnt, 3, 3000, 1<<20)
		b := genBlob(3100, 1<<20)
		filler := filepath.Join(mnt, "filler")
		filled := false
		// The Put has checked free space when it first reads; the disk
		// fills up right then.
		r := &hookReader{r: bytes.NewReader(b.Data), before: func(int64) error {
			if !filled {
				fillDisk(t, filler)
				filled = true
			}
			return nil
		}}
		err := s.Put(t.Context(), b.Digest, int64(len(b.Data)), r)
		t.Logf("Put: %v", err)
		if !filled {
			t.Fatal("Put never read its input")
		}
		if !errors.Is(err, cache.ErrNoSpace) {
			t.Fatalf("Put that ran out of disk: %v, want ErrNoSpace", err)
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Put failed with %v, not with ENOSPC from the write itself: the during-write path was not reached", err)
		}
		checkAfterNoSpace(t, s, stored, b.Digest)

		// Once there is room again, the same Put works.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
			t.Fatalf("Put after the disk was freed: %v", err)
		}
		checkAfterNoSpace(t, s, append(stored, b))
	})

	t.Run("index.json on a full disk", func(t *testing.T) {
		mnt := mountTmpfs(t, tmpfsOpts)
		s, stored := openWithRoots(t, mnt, 2, 4000, 1<<20)
		indexPath := filepath.Join(s.Dir(), "index.json")
		before, err := os.ReadFile(indexPath)
		if err != nil {
			t.Fatal(err)
		}
		filler := filepath.Join(mnt, "filler")
		fillDisk(t, filler)

		extra := genBlob(4100, 100)
		err = s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
			im.Manifests = append(im.Manifests, v1.Descriptor{MediaType: types.OCILayer, Digest: extra.Digest, Size: 100})
			return nil
		})
		t.Logf("UpdateIndex: %v", err)
		if !errors.Is(err, cache.ErrNoSpace) {
			t.Fatalf("UpdateIndex on a full disk: %v, want ErrNoSpace", err)
		}
		after, err := os.ReadFile(indexPath)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(after, before) {
			t.Fatalf("a failed UpdateIndex changed index.json:\nbefore %s\nafter  %s", before, after)
		}
		if im, err := s.Index(t.Context()); err != nil || len(im.Manifests) != len(stored) {
			t.Fatalf("Index after a failed update: %v roots, %v; want %d", im, err, len(stored))
		}
		// A small Put is refused too, and reading still works.
		err = s.Put(t.Context(), extra.Digest, 100, bytes.NewReader(extra.Data))
		if !errors.Is(err, cache.ErrNoSpace) {
			t.Fatalf("Put of 100 bytes on a full disk: %v, want ErrNoSpace", err)
		}
		checkAfterNoSpace(t, s, stored, extra.Digest)

		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if err := putRoot(t, s, extra); err != nil {
			t.Fatalf("Put after the disk was freed: %v", err)
		}
		if im, err := s.Index(t.Context()); err != nil || len(im.Manifests) != len(stored)+1 {
			t.Fatalf("Index after freeing the disk: %v, %v", im, err)
		}
	})

	t.Run("out of inodes", func(t *testing.T) {
		// statfs says there are bytes to spare, but no file can be created.
		mnt := mountTmpfs(t, tmpfsOpts+",nr_inodes=64")
		s, stored := openWithRoots(t, mnt, 1, 6000, 1<<20)
		before, err := os.ReadFile(filepath.Join(s.Dir(), "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		fillNames(t, mnt, func(i int) string { return fmt.Sprintf("pad-%d", i) }, 100) // nr_inodes=64
		b := genBlob(6100, 4096)
		err = s.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data))
		t.Logf("Put: %v", err)
		if !errors.Is(err, cache.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Put with no inode left: %v, want ErrNoSpace from ENOSPC", err)
		}
		err = s.UpdateIndex(t.Context(), func(im *v1.IndexManifest) error {
			im.Manifests = append(im.Manifests, v1.Descriptor{MediaType: types.OCILayer, Digest: b.Digest, Size: 4096})
			return nil
		})
		t.Logf("UpdateIndex: %v", err)
		if !errors.Is(err, cache.ErrNoSpace) {
			t.Fatalf("UpdateIndex with no inode left: %v, want ErrNoSpace", err)
		}
		if after, err := os.ReadFile(filepath.Join(s.Dir(), "index.json")); err != nil || !bytes.Equal(after, before) {
			t.Fatalf("a failed UpdateIndex changed index.json (%v):\nbefore %s\nafter  %s", err, before, after)
		}
		checkAfterNoSpace(t, s, stored, b.Digest)
	})

	t.Run("unreachable blobs are evicted to make room", func(t *testing.T) {
		// Without roots, a Put that does not fit evicts least recently
		// used blobs instead of failing (rule 3).
		mnt := mountTmpfs(t, tmpfsOpts)
		s, _ := openWithRoots(t, mnt, 0, 0, 0)
		const n = 12 // 12 MiB through an 8 MiB disk
		var blobs []cachetest.Blob
		for i := range n {
			b := genBlob(uint64(5000+i), 1<<20)
			if err := s.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
				t.Fatalf("Put %d with evictable blobs on disk: %v", i, err)
			}
			blobs = append(blobs, b)
		}
		if s.Stats().Evictions == 0 {
			t.Fatal("12 MiB fit on an 8 MiB tmpfs without an eviction")
		}
		// What is left is the most recently written blobs, all intact.
		var kept []cachetest.Blob
		var presence []bool
		for _, b := range blobs {
			_, err := s.Stat(t.Context(), b.Digest)
			if err != nil && !errors.Is(err, cache.ErrNotFound) {
				t.Fatal(err)
			}
			presence = append(presence, err == nil)
			if err == nil {
				kept = append(kept, b)
			}
		}
		for i := 1; i < n; i++ {
			if presence[i-1] && !presence[i] || !presence[n-1] {
				t.Fatalf("present after eviction: %v; want the newest blobs, evicted oldest first", presence)
			}
		}
		checkAfterNoSpace(t, s, kept)
		t.Logf("%d evictions; %d of %d blobs kept", s.Stats().Evictions, len(kept), n)
	})
}

// TestFullDiskAtRename fills the disk so that the write of a blob succeeds
// but its rename into blobs/sha256 cannot: the directory needs a new block
// and none is free. That, too, is a full disk and must be ErrNoSpace.
func TestFullDiskAtRename(t *testing.T) {
	mnt := mountExt4(t, 8<<20)
	s, stored := openWithRoots(t, mnt, 2, 7000, 64<<10)
	fillDisk(t, filepath.Join(mnt, "filler"))
	// Fill the blocks of blobs/sha256 with entries that are not blobs
	// (Walk and Verify skip them) and whose names are as long as a
	// digest's: one more such name needs a new block.
	blobDir := filepath.Join(s.Dir(), "blobs", "sha256")
	pads := fillNames(t, blobDir, func(i int) string { return fmt.Sprintf("pad-%060d", i) }, 10000)
	t.Logf("disk full, blobs/sha256 full after %d more names; %d bytes available", pads, availBytes(t, mnt))

	// The empty blob: nothing to write, so only the rename needs space.
	empty := cachetest.Blob{Data: []byte{}, Digest: cachetest.Digest(nil)}
	err := s.Put(t.Context(), empty.Digest, 0, bytes.NewReader(nil))
	t.Logf("Put: %v", err)
	if err == nil {
		t.Fatal("Put succeeded although its rename could not have: the test did not fill the directory")
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Put failed with %v, not with ENOSPC: the rename path was not reached", err)
	}
	if !errors.Is(err, cache.ErrNoSpace) {
		t.Errorf("Put whose rename hit a full disk: %v, want ErrNoSpace (localfs/put.go: commit returns the rename error without noSpace)", err)
	}
	checkAfterNoSpace(t, s, stored, empty.Digest)

	// With room again, the same Put works.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), empty.Digest, 0, bytes.NewReader(nil)); err != nil {
		t.Fatalf("Put after the disk was freed: %v", err)
	}
	checkAfterNoSpace(t, s, append(stored, empty))
}

// TestOpenOnAFullDisk: creating a store on a full disk is ErrNoSpace too,
// and leaves no half layout behind.
func TestOpenOnAFullDisk(t *testing.T) {
	for _, fs := range []struct {
		name  string
		mount func(t *testing.T) string
	}{
		{"tmpfs", func(t *testing.T) string { return mountTmpfs(t, tmpfsOpts) }}, // directories cost no space: oci-layout fails
		{"ext4", func(t *testing.T) string { return mountExt4(t, 8<<20) }},       // the directories fail
	} {
		t.Run(fs.name, func(t *testing.T) {
			mnt := fs.mount(t)
			fillDisk(t, filepath.Join(mnt, "filler"))
			dir := filepath.Join(mnt, "store")
			_, err := localfs.Open(dir)
			t.Logf("Open: %v", err)
			if !errors.Is(err, cache.ErrNoSpace) {
				t.Errorf("Open of a new store on a full disk: %v, want ErrNoSpace", err)
			}
			for _, name := range []string{"oci-layout", "index.json"} {
				if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s after a failed Open: %v, want it absent", name, err)
				}
			}
			if entries, err := os.ReadDir(filepath.Join(dir, ".buildcache", "tmp")); err == nil && len(entries) > 0 {
				t.Errorf("temp files left by a failed Open: %v", entries)
			}
			if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
				t.Fatal(err)
			}
			s, err := localfs.Open(dir)
			if err != nil {
				t.Fatalf("Open once there is room: %v", err)
			}
			mustVerifyStore(t, s)
		})
	}
}
