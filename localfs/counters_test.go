package localfs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
)

func openAt(t *testing.T, dir string) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func storeBytes(t *testing.T, s *localfs.Store, data []byte) v1.Hash {
	t.Helper()
	d := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(data))}
	if err := s.Put(t.Context(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return d
}

// getAll reads d and returns whether it was there.
func getAll(ctx context.Context, s *localfs.Store, d v1.Hash) bool {
	rc, err := s.Get(ctx, d)
	if err != nil {
		return false
	}
	var b bytes.Buffer
	b.ReadFrom(rc)
	rc.Close()
	return true
}

// TestCountersTwoStoresSumExactly has two Stores on one directory count
// and flush concurrently: after both Close, the file holds exactly the
// sum of what each counted, none lost or counted twice.
func TestCountersTwoStoresSumExactly(t *testing.T) {
	dir := t.TempDir()
	a, b := openAt(t, dir), openAt(t, dir)
	present := storeBytes(t, a, []byte("a blob both read"))
	absent := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256([]byte("never stored")))}
	ctx := t.Context()

	const rounds = 200
	var wg sync.WaitGroup
	for _, s := range []*localfs.Store{a, b} {
		wg.Go(func() {
			for i := range rounds {
				getAll(ctx, s, present)
				getAll(ctx, s, absent)
				if err := s.AddCounters(map[string]uint64{"test.added": 2}); err != nil {
					t.Error(err)
					return
				}
				if i%10 == 0 {
					if err := s.FlushCounters(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	want := a.Stats().Add(b.Stats())
	if want.Hits != 2*rounds || want.Misses != 2*rounds {
		t.Fatalf("the stores counted %+v, want %d hits and misses", want, 2*rounds)
	}
	for _, s := range []*localfs.Store{a, b} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := openAt(t, dir).Lifetime(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stats != want {
		t.Errorf("lifetime stats = %+v, want the sum %+v", got.Stats, want)
	}
	if n := got.Counters["test.added"]; n != 2*2*rounds {
		t.Errorf("test.added = %d, want %d", n, 2*2*rounds)
	}
	if got.Since.IsZero() || got.Damaged || got.Reset != "" {
		t.Errorf("since %v, damaged %v, reset %q: want a start time and no damage", got.Since, got.Damaged, got.Reset)
	}
}

// TestCountersNewStoreSeesPreviousTotals is the next process: it sees
// what the last one flushed, plus what it counts itself before a flush.
func TestCountersNewStoreSeesPreviousTotals(t *testing.T) {
	dir := t.TempDir()
	first := openAt(t, dir)
	d := storeBytes(t, first, []byte("layer"))
	getAll(t.Context(), first, d)
	if err := first.AddCounters(map[string]uint64{"resolver.pulled": 1}); err != nil {
		t.Fatal(err)
	}
	before := first.Stats()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := openAt(t, dir)
	if s := second.Stats(); s != (cache.Stats{}) {
		t.Fatalf("a new store's Stats = %+v: want this process's, zero", s)
	}
	got, err := second.LifetimeStats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got != before || got.Hits != 1 || got.BytesIn == 0 {
		t.Fatalf("second store's lifetime = %+v, want the first's %+v", got, before)
	}
	getAll(t.Context(), second, d) // counted, not flushed yet
	l, err := second.Lifetime(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if l.Stats.Hits != 2 || l.Counters["resolver.pulled"] != 1 {
		t.Fatalf("lifetime with an unflushed hit = %+v, want 2 hits and resolver.pulled 1", l)
	}
}

// TestCountersDamagedFile: a file that is torn or garbage reads as empty,
// with a reason and no error, and the next flush rewrites it.
func TestCountersDamagedFile(t *testing.T) {
	// A valid file, to tear.
	dir := t.TempDir()
	s := openAt(t, dir)
	storeBytes(t, s, []byte("x"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ".buildcache", "counters")
	valid, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"torn", valid[:len(valid)/2]},
		{"torn at a line end", valid[:bytes.IndexByte(valid, '\n')+1]},
		{"one digit changed", bytes.Replace(valid, []byte("store.bytes_in 1"), []byte("store.bytes_in 7"), 1)},
		{"garbage", []byte("\x00\xff garbage\nmore\n")},
		{"empty", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, ".buildcache"), 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, ".buildcache", "counters")
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			s := openAt(t, dir)
			l, err := s.Lifetime(t.Context())
			if err != nil {
				t.Fatalf("Lifetime = %v, want no error for a damaged file", err)
			}
			if l.Stats != (cache.Stats{}) || len(l.Counters) != 0 || !l.Damaged || l.Reset == "" {
				t.Fatalf("Lifetime of a damaged file = %+v, want empty, damaged, with a reason", l)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close = %v", err)
			}
			l, err = openAt(t, dir).Lifetime(t.Context())
			if err != nil || l.Damaged || l.Reset == "" || l.Since.IsZero() {
				t.Fatalf("after Close, Lifetime = %+v, %v: want a rewritten file that remembers its reset", l, err)
			}
		})
	}
}

// TestAddCountersRejectsBadNames keeps the file's lines parseable and the
// store's own names its own.
func TestAddCountersRejectsBadNames(t *testing.T) {
	s := newStore(t)
	for _, name := range []string{"", "Upper", "with space", "store.hits", "new\nline", "1digit"} {
		if err := s.AddCounters(map[string]uint64{name: 1}); err == nil {
			t.Errorf("AddCounters(%q) = nil, want an error", name)
		}
	}
}
