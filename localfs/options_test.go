package localfs_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

func TestOpenRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opt  localfs.Option
		want string
	}{
		{localfs.WithMaxBytes(-1), "WithMaxBytes(-1)"},
		{localfs.WithMinFreeBytes(-2), "WithMinFreeBytes(-2)"},
		{localfs.WithTTL(-time.Second), "WithTTL(-1s)"},
		{localfs.WithTempGrace(-time.Minute), "WithTempGrace(-1m0s)"},
		{localfs.WithClock(nil), "WithClock(nil)"},
		{localfs.WithLowWater(0), "WithLowWater(0)"},
		{localfs.WithLowWater(-0.5), "WithLowWater(-0.5)"},
		{localfs.WithLowWater(1.5), "WithLowWater(1.5)"},
		{localfs.WithLowWater(math.NaN()), "WithLowWater(NaN)"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := localfs.Open(t.TempDir(), tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open with %s: %v, want an error naming it", tc.want, err)
			}
		})
	}
}

func TestGCRejectsBadOptionsBeforeCollecting(t *testing.T) {
	s := newStore(t)
	b := cachetest.NewBlob(1, 100)
	putBlob(t, s, b)
	for _, tc := range []struct {
		opt  localfs.GCOption
		want string
	}{
		{localfs.GCMaxBytes(-1), "GCMaxBytes(-1)"},
		{localfs.GCTTL(-time.Hour), "GCTTL(-1h0m0s)"},
		{localfs.GCProgress(nil), "GCProgress(nil)"},
		{localfs.GCCandidates(nil), "GCCandidates(nil)"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			// GCMaxBytes(1) alone would collect the unreachable blob.
			rep, err := s.GC(t.Context(), localfs.GCMaxBytes(1), tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("GC with %s: %v, want an error naming it", tc.want, err)
			}
			if rep != (localfs.GCReport{}) || !present(t, s, b.Digest) {
				t.Fatalf("GC with a bad option did something: %+v, blob present=%v", rep, present(t, s, b.Digest))
			}
		})
	}
}
