package cachetest

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/buildcache/buildcache/cache"
)

func (s *suite) testCorruption(t *testing.T) {
	if s.cfg.corrupt == nil {
		t.Skip("backend has no Corrupter: its stored bytes cannot be changed from outside")
	}
	for _, how := range []Corruption{FlipByte, Truncate} {
		t.Run(how.String(), func(t *testing.T) {
			c := s.newCache(t)
			b := NewBlob(13, 300000)
			good := NewBlob(14, 300000)
			put(t, c, b)
			put(t, c, good)
			s.cfg.corrupt(t, c, b.Digest, how)

			var stats0 cache.Stats
			sr, hasStats := c.(cache.StatsReporter)
			if hasStats {
				stats0 = sr.Stats()
			}
			rc, err := c.Get(ctxT(t), b.Digest)
			if err == nil {
				var got []byte
				got, err = io.ReadAll(rc)
				if cerr := rc.Close(); err == nil {
					err = cerr
				}
				if err == nil {
					t.Fatalf("a %s blob was served as good (%d bytes, equal=%v)", how, len(got), bytes.Equal(got, b.Data))
				}
			}
			if !errors.Is(err, cache.ErrCorrupt) {
				t.Fatalf("Get of a %s blob = %v, want ErrCorrupt", how, err)
			}
			if _, err := c.Stat(ctxT(t), b.Digest); !errors.Is(err, cache.ErrNotFound) {
				t.Fatalf("after ErrCorrupt, Stat = %v; the bad entry must be gone", err)
			}
			if hasStats && sr.Stats().Corruptions <= stats0.Corruptions {
				t.Error("Stats().Corruptions did not count the corrupt entry")
			}
			if got := mustGet(t, c, good.Digest); !bytes.Equal(got, good.Data) {
				t.Fatal("a healthy blob was harmed")
			}
			put(t, c, b) // the entry can be repaired by a new Put
			if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
				t.Fatal("re-Put after corruption did not restore the blob")
			}
		})
	}
}
