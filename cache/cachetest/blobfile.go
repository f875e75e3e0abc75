package cachetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// RunFileOpener checks cache.FileOpener, found with cache.As as a server
// finds it: SendRange sends exactly the range asked, as often as asked; a
// blob not stored is ErrNotFound; and a blob damaged behind the cache's
// back (corrupt, which must damage the files OpenFile opens) never yields
// a complete range, wherever the damage and whatever the range, even when
// the blob was sent (and verified) before the damage: SendRange fails
// with ErrCorrupt and the blob's file is gone. newCache must return a new,
// empty store each time.
func RunFileOpener(t *testing.T, newCache func(t *testing.T) cache.LayerCache, corrupt Corrupter) {
	open := func(t *testing.T) (cache.LayerCache, cache.FileOpener) {
		c := newCache(t)
		return c, mustFind[cache.FileOpener](t, c)
	}
	const size = 300000
	ranges := []struct{ off, n int64 }{{0, size}, {0, 1}, {size - 1, 1}, {1000, 5000}, {size / 2, size / 2}, {7, 0}}
	t.Run("Ranges", func(t *testing.T) {
		c, fo := open(t)
		b := NewBlob(201, size)
		put(t, c, b)
		for round := range 2 { // the second round may rely on what the first verified
			for _, r := range ranges {
				got, err := sendRange(t, fo, b.Digest, r.off, r.n, round == 1)
				if err != nil || !bytes.Equal(got, b.Data[r.off:r.off+r.n]) {
					t.Fatalf("round %d, range %d+%d: %d bytes, %v; want the blob's", round, r.off, r.n, len(got), err)
				}
			}
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		_, fo := open(t)
		if _, err := fo.OpenFile(ctxT(t), NewBlob(202, 10).Digest); !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("OpenFile of a blob never stored = %v, want ErrNotFound", err)
		}
	})
	for _, how := range []Corruption{FlipByte, Truncate} {
		for _, sentBefore := range []bool{false, true} {
			for _, r := range ranges[:5] {
				name := fmt.Sprintf("%s/sentBefore=%v/%d+%d", how, sentBefore, r.off, r.n)
				t.Run(name, func(t *testing.T) {
					c, fo := open(t)
					b := NewBlob(203, size)
					put(t, c, b)
					if sentBefore {
						if _, err := sendRange(t, fo, b.Digest, 0, size, false); err != nil {
							t.Fatal(err)
						}
					}
					corrupt(t, c, b.Digest, how)
					got, err := sendRange(t, fo, b.Digest, r.off, r.n, r.n%2 == 0)
					if errors.Is(err, cache.ErrNotFound) {
						return // another reader found the damage first (a tier's background far write)
					}
					if err == nil {
						t.Fatalf("a %s blob was sent: %d bytes", how, len(got))
					}
					if !errors.Is(err, cache.ErrCorrupt) {
						t.Fatalf("SendRange of a %s blob = %v, want ErrCorrupt", how, err)
					}
					if _, err := fo.OpenFile(ctxT(t), b.Digest); !errors.Is(err, cache.ErrNotFound) {
						t.Fatalf("after ErrCorrupt, OpenFile = %v; the damaged file must be gone", err)
					}
				})
			}
		}
	}
}

// sendRange opens d and sends [off, off+n) of it, within the file's size
// (a truncated file's is smaller), as a server does, to a writer that has
// a ReadFrom (as a connection has) or, with plain, one that has not. On
// an error it checks that fewer than n bytes went out.
func sendRange(t *testing.T, fo cache.FileOpener, d v1.Hash, off, n int64, plain bool) ([]byte, error) {
	t.Helper()
	bf, err := fo.OpenFile(ctxT(t), d)
	if err != nil {
		return nil, err
	}
	defer bf.Close()
	if size := bf.Size(); off+n > size {
		off = min(off, max(size-1, 0))
		n = min(n, size-off)
	}
	var out bytes.Buffer
	var w io.Writer = &out
	if plain {
		w = struct{ io.Writer }{&out}
	}
	k, err := bf.SendRange(ctxT(t), w, off, n)
	if k != int64(out.Len()) {
		t.Errorf("SendRange returned %d, wrote %d bytes", k, out.Len())
	}
	if err != nil && n > 0 && int64(out.Len()) >= n {
		t.Fatalf("SendRange failed (%v) after sending the whole range of %d bytes", err, n)
	}
	return out.Bytes(), err
}

// mustFind is what cache.As finds in c as a T, or the test's end.
func mustFind[T any](t *testing.T, c cache.LayerCache) T {
	t.Helper()
	v, ok := cache.As[T](c)
	if !ok {
		var zero T
		t.Fatalf("%T: cache.As finds no %T", c, &zero)
	}
	return v
}
