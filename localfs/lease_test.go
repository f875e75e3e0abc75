//go:build linux

package localfs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

func leaseFiles(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, ".buildcache", "leases"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return len(entries)
}

// TestLeaseKeepsBlobsFromCollectors: blobs a lease holder wrote, or found
// stored and looked at, under its lease survive GC with a budget of one
// byte and eviction in another Store on the same directory, until the
// lease is released.
func TestLeaseKeepsBlobsFromCollectors(t *testing.T) {
	dir := t.TempDir()
	holder, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	collector, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	written, found, other := genBlob(9200, 2000), genBlob(9201, 3000), genBlob(9202, 1000)
	putBlob(t, holder, found) // stored before the lease: a pull finds it
	putBlob(t, holder, other)

	ctx, release, err := holder.Lease(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := holder.Put(ctx, written.Digest, int64(len(written.Data)), bytes.NewReader(written.Data)); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Stat(ctx, found.Digest); err != nil {
		t.Fatal(err)
	}

	rep, err := collector.GC(t.Context(), localfs.GCMaxBytes(1))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 1 || rep.Leased != 2 {
		t.Errorf("GC under a lease = %+v, want the unleased blob removed and 2 leased kept", rep)
	}
	for _, b := range []cachetest.Blob{written, found} {
		if !present(t, collector, b.Digest) {
			t.Fatalf("GC removed leased blob %s", b.Digest)
		}
	}
	if present(t, collector, other.Digest) {
		t.Error("GC kept a blob that no lease names")
	}

	// Eviction inside Put, in a store whose budget only the leased blobs fill.
	tight, err := localfs.Open(dir, localfs.WithMaxBytes(int64(len(written.Data)+len(found.Data))))
	if err != nil {
		t.Fatal(err)
	}
	extra := genBlob(9203, 500)
	if err := tight.Put(t.Context(), extra.Digest, 500, bytes.NewReader(extra.Data)); !errors.Is(err, cache.ErrNoSpace) {
		t.Errorf("Put that only evicting leased blobs could fit = %v, want ErrNoSpace", err)
	}
	for _, b := range []cachetest.Blob{written, found} {
		if !present(t, collector, b.Digest) {
			t.Fatalf("eviction removed leased blob %s", b.Digest)
		}
	}

	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Fatalf("a second release: %v", err)
	}
	if n := leaseFiles(t, dir); n != 0 {
		t.Errorf("%d lease files left after release", n)
	}
	rep, err = collector.GC(t.Context(), localfs.GCMaxBytes(1))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 2 || rep.Leased != 0 {
		t.Errorf("GC after release = %+v, want both blobs collected", rep)
	}
	// A lease context used after release protects nothing and breaks nothing.
	if err := holder.Put(ctx, other.Digest, int64(len(other.Data)), bytes.NewReader(other.Data)); err != nil {
		t.Errorf("Put with a released lease's context: %v", err)
	}
}

// leaseHolderRole takes a lease, puts a blob under it and waits to be
// killed.
func leaseHolderRole(t *testing.T, c *helperChild) {
	s := c.open(t)
	ctx, _, err := s.Lease(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b := genBlob(9210, 4096)
	if err := s.Put(ctx, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	c.say("leased")
	c.await(t, "never sent")
}

// TestLeaseOfKilledProcessExpires: a lease protects its blobs from a
// collector in another process while its holder lives, and not after the
// holder is killed; its file is removed by the next collector.
func TestLeaseOfKilledProcessExpires(t *testing.T) {
	dir := t.TempDir()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := genBlob(9210, 4096)
	h := startHelper(t, "lease-holder", dir)
	h.expect("leased")
	rep, err := s.GC(t.Context(), localfs.GCMaxBytes(1))
	if err != nil {
		t.Fatal(err)
	}
	if !present(t, s, b.Digest) || rep.Leased != 1 {
		t.Fatalf("GC while the holder lives = %+v: removed its leased blob", rep)
	}
	killHelper(t, h)
	rep, err = s.GC(t.Context(), localfs.GCMaxBytes(1))
	if err != nil {
		t.Fatal(err)
	}
	if present(t, s, b.Digest) || rep.Leased != 0 {
		t.Errorf("GC after the holder was killed = %+v: its lease still protects the blob", rep)
	}
	if n := leaseFiles(t, dir); n != 0 {
		t.Errorf("%d lease files left after the holder died and GC ran", n)
	}
}
