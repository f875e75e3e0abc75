package cachetest

import (
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
)

// RunRevalidationClaimer tests a cache.RevalidationClaimer: newPair
// returns two caches that share their records as two processes of a
// fleet do (two s3.Caches on one bucket; two tiers with near tiers of
// their own over one). Of the two, one is told to revalidate a record
// older than the max age and the other that it is busy; a record checked
// within the max age, or the claimant's record once written, is served
// by both with no claim. Both need cache.RootRecorder.
func RunRevalidationClaimer(t *testing.T, newPair func(t *testing.T) (a, b cache.LayerCache)) {
	const name = "example.com/fleet:1"
	const maxAge = time.Hour
	a, b := newPair(t)
	ca, okA := cache.As[cache.RevalidationClaimer](a)
	cb, okB := cache.As[cache.RevalidationClaimer](b)
	ra, okR := cache.As[cache.RootRecorder](a)
	if !okA || !okB || !okR {
		t.Fatalf("%T: cache.As finds no RevalidationClaimer or RootRecorder", a)
	}
	blob := NewBlob(301, 500)
	put(t, a, blob)
	record := func(at time.Time) {
		t.Helper()
		desc := rootDesc(name, blob)
		desc.Annotations[cache.AnnotationResolvedAt] = at.UTC().Format(time.RFC3339Nano)
		if err := ra.RecordRoot(ctxT(t), desc); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(c cache.RevalidationClaimer) cache.RevalidationClaim {
		t.Helper()
		cl, _, err := c.ClaimRevalidation(ctxT(t), name, maxAge)
		if err != nil {
			t.Fatal(err)
		}
		if !cl.Shared {
			t.Fatalf("claim %+v: not shared", cl)
		}
		return cl
	}

	record(time.Now())
	for _, c := range []cache.RevalidationClaimer{ca, cb} {
		if cl := claim(c); cl.Claimed || !cl.Found || cl.Root.Digest != blob.Digest {
			t.Fatalf("record checked now: %+v, want the root, no claim", cl)
		}
	}
	record(time.Now().Add(2 * time.Hour)) // a later check: the stale record below is older
	record(time.Now().Add(-2 * maxAge))   // and an older one does not replace it
	if cl := claim(cb); cl.Claimed {
		t.Fatalf("an older record replaced a newer one: %+v", cl)
	}

	// A fresh pair over a record older than the max age.
	a, b = newPair(t)
	ca, _ = cache.As[cache.RevalidationClaimer](a)
	cb, _ = cache.As[cache.RevalidationClaimer](b)
	ra, _ = cache.As[cache.RootRecorder](a)
	put(t, a, blob)
	record(time.Now().Add(-2 * maxAge))
	if cl := claim(ca); !cl.Claimed || !cl.Found {
		t.Fatalf("first claim of a stale record: %+v, want claimed", cl)
	}
	if cl := claim(cb); cl.Claimed || !cl.Busy || cl.Root.Digest != blob.Digest {
		t.Fatalf("second claim of a stale record: %+v, want busy with the root", cl)
	}
	record(time.Now()) // the claimant's check
	if cl := claim(cb); cl.Claimed || cl.Busy {
		t.Fatalf("after the claimant recorded: %+v, want the fresh root", cl)
	}
}
