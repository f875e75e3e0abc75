//go:build linux

package localfs_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
)

// TestMinFreeBytesHoldsWhileStreaming: a Put of unknown size (as a config
// fetched without a descriptor size is) that streams more than the disk
// can take above the floor fails with ErrNoSpace during the copy, with the
// floor still kept and no temp file left, instead of only being checked
// before it starts.
func TestMinFreeBytesHoldsWhileStreaming(t *testing.T) {
	mnt := mountTmpfs(t, "size=67108864") // 64 MiB
	const floor = 32 << 20
	s, err := localfs.Open(filepath.Join(mnt, "store"), localfs.WithMinFreeBytes(floor))
	if err != nil {
		t.Fatal(err)
	}
	const n = 48 << 20 // would leave 16 MiB free
	d := streamDigest(9300, n)
	err = s.Put(t.Context(), d, -1, genStream(9300, n))
	if !errors.Is(err, cache.ErrNoSpace) {
		t.Fatalf("Put of %d bytes of unknown size with %d kept free on a 64 MiB disk = %v, want ErrNoSpace", n, floor, err)
	}
	if free := availBytes(t, mnt); free < floor-(8<<20) {
		t.Errorf("the Put took the disk to %d bytes free, far below the %d floor", free, floor)
	}
	if temps := tempFiles(t, filepath.Join(mnt, "store"), ""); len(temps) != 0 {
		t.Errorf("temp files left behind: %v", temps)
	}
	if present(t, s, d) {
		t.Error("the blob was stored")
	}

	// The budget holds while streaming too, for a size not given.
	b, err := localfs.Open(filepath.Join(mnt, "budget"), localfs.WithMaxBytes(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	d = streamDigest(9301, 16<<20)
	if err := b.Put(t.Context(), d, -1, genStream(9301, 16<<20)); !errors.Is(err, cache.ErrNoSpace) {
		t.Errorf("Put of 16 MiB of unknown size into an 8 MiB budget = %v, want ErrNoSpace", err)
	}
}
