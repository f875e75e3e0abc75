package localfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockFileWaitsUntilContextEnds(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gc.lock")
	held, err := lockFile(t.Context(), p, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, exclusive := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		l, err := lockFile(ctx, p, exclusive)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			l.Unlock()
			t.Fatalf("lockFile(exclusive=%v) while another holds it exclusively: %v, want DeadlineExceeded", exclusive, err)
		}
	}
	held.Unlock()
	l, err := lockFile(t.Context(), p, true)
	if err != nil {
		t.Fatalf("lockFile once released: %v", err)
	}
	l.Unlock()
}

func TestLockOCIIndexFollowsARemovedLockFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "index.json.lock")
	first, err := lockOCIIndex(t.Context(), p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Unlock()
	if !first.stillAt(p) {
		t.Fatal("a fresh lock is not at its path")
	}
	// ociindex removes the lock file after use: the lock held is on a
	// file no longer at the path, and the next locker gets a new file.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if first.stillAt(p) {
		t.Fatal("stillAt after the lock file was removed")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	second, err := lockOCIIndex(ctx, p, true)
	if err != nil {
		t.Fatalf("lockOCIIndex after the file was removed: %v", err)
	}
	defer second.Unlock()
	if !second.stillAt(p) {
		t.Fatal("the new lock is not at its path")
	}
	// The new file excludes as the old one did.
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if l, err := lockOCIIndex(ctx, p, false); !errors.Is(err, context.DeadlineExceeded) {
		l.Unlock()
		t.Fatalf("shared lockOCIIndex while held exclusively: %v, want DeadlineExceeded", err)
	}
}
