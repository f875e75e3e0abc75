package cachetest

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

func (s *suite) testNotFound(t *testing.T) {
	c := s.newCache(t)
	d := NewBlob(7, 10).Digest
	if _, err := c.Stat(ctxT(t), d); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Stat of missing = %v, want ErrNotFound", err)
	}
	rc, err := c.Get(ctxT(t), d)
	if !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Get of missing = %v, want ErrNotFound", err)
	}
	if err == nil {
		rc.Close()
	}
	if err := c.Delete(ctxT(t), d); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Delete of missing = %v, want ErrNotFound", err)
	}
}

// InvalidDigests are digests that every backend must reject with
// cache.ErrInvalidDigest before they reach a path or key.
var InvalidDigests = []v1.Hash{
	{},
	{Algorithm: "sha256"},
	{Algorithm: "sha256", Hex: "../../etc/passwd"},
	{Algorithm: "sha256", Hex: "../../../../../../../../../../../../../../../../../../../../../../tmp"},
	{Algorithm: "sha256", Hex: "/etc/passwd"},
	{Algorithm: "sha256", Hex: "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde/"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\x00"},
	{Algorithm: "sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg"},
	{Algorithm: "../sha256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	{Algorithm: "SHA256", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	{Algorithm: "md5", Hex: "0123456789abcdef0123456789abcdef"},
	{Algorithm: "sha512", Hex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
}

func (s *suite) testInvalidDigests(t *testing.T) {
	c := s.newCache(t)
	for _, d := range InvalidDigests {
		t.Run(fmt.Sprintf("%q", d.String()), func(t *testing.T) {
			check := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, cache.ErrInvalidDigest) {
					t.Errorf("%s(%q) = %v, want ErrInvalidDigest", op, d.String(), err)
				}
			}
			_, err := c.Stat(ctxT(t), d)
			check("Stat", err)
			rc, err := c.Get(ctxT(t), d)
			if err == nil {
				rc.Close()
			}
			check("Get", err)
			check("Put", c.Put(ctxT(t), d, 3, bytes.NewReader([]byte("abc"))))
			check("Delete", c.Delete(ctxT(t), d))
		})
	}
	if got := walkAll(t, c); len(got) != 0 {
		t.Fatalf("invalid digests left entries: %v", got)
	}
}

func (s *suite) testDelete(t *testing.T) {
	c := s.newCache(t)
	a, b := NewBlob(8, 1000), NewBlob(9, 1000)
	put(t, c, a)
	put(t, c, b)
	if err := c.Delete(ctxT(t), a.Digest); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	expectAbsent(t, c, a.Digest)
	if err := c.Delete(ctxT(t), a.Digest); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("Delete of one blob damaged another")
	}
	put(t, c, a) // a deleted blob can be stored again
	if got := mustGet(t, c, a.Digest); !bytes.Equal(got, a.Data) {
		t.Fatal("re-Put after Delete returned other bytes")
	}
}

func (s *suite) testWalk(t *testing.T) {
	c := s.newCache(t)
	want := map[v1.Hash]int64{}
	for i := range 20 {
		b := NewBlob(100+uint64(i), 100*i)
		put(t, c, b)
		want[b.Digest] = int64(len(b.Data))
	}
	for i := range 5 {
		d := NewBlob(100+uint64(i), 100*i).Digest
		if err := c.Delete(ctxT(t), d); err != nil {
			t.Fatal(err)
		}
		delete(want, d)
	}
	got := walkAll(t, c)
	if !equalSets(got, want) {
		t.Fatalf("Walk = %d entries %v, want %d %v", len(got), sortedKeys(got), len(want), sortedKeys(want))
	}
	stop := errors.New("stop")
	calls := 0
	err := c.Walk(ctxT(t), func(v1.Hash, int64) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Walk whose fn fails = %v after %d calls, want fn's error after 1", err, calls)
	}
}

func equalSets(a, b map[v1.Hash]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sortedKeys(m map[v1.Hash]int64) []string {
	var out []string
	for k := range m {
		out = append(out, k.Hex[:12])
	}
	sort.Strings(out)
	return out
}

func (s *suite) testStats(t *testing.T) {
	c := s.newCache(t)
	sr, ok := c.(cache.StatsReporter)
	if !ok {
		t.Skip("backend does not report Stats")
	}
	before := sr.Stats()
	b := NewBlob(11, 3000)
	put(t, c, b)
	mustGet(t, c, b.Digest)
	if rc, err := c.Get(ctxT(t), NewBlob(12, 3).Digest); err == nil {
		rc.Close()
	}
	after := sr.Stats()
	if after.Hits < before.Hits+1 {
		t.Errorf("Hits %d -> %d after a Get of a stored blob", before.Hits, after.Hits)
	}
	if after.Misses < before.Misses+1 {
		t.Errorf("Misses %d -> %d after a Get of a missing blob", before.Misses, after.Misses)
	}
	if after.BytesIn < before.BytesIn+3000 {
		t.Errorf("BytesIn %d -> %d after a 3000-byte Put", before.BytesIn, after.BytesIn)
	}
	if after.BytesOut < before.BytesOut+3000 {
		t.Errorf("BytesOut %d -> %d after a 3000-byte Get", before.BytesOut, after.BytesOut)
	}
}
