package s3_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	s3cache "github.com/buildcache/buildcache/s3"
)

// TestClaimRevalidationOnePerMaxAge: of the processes asking about one
// reference, one is told to revalidate per max age; the others serve
// the record, or wait while the claimant revalidates.
func TestClaimRevalidationOnePerMaxAge(t *testing.T) {
	f := newFleet(t)
	ctx := t.Context()
	a, b, c := f.proc(), f.proc(), f.proc()
	top, _ := image(t, a, "v1")
	const name = "r.example/app:v1"
	const maxAge = 10 * time.Minute
	if err := a.RecordRoot(ctx, root(top, name, f.clock.Now())); err != nil {
		t.Fatal(err)
	}

	claim := func(p *s3cache.Cache) (cache.RevalidationClaim, func()) {
		t.Helper()
		cl, release, err := p.ClaimRevalidation(ctx, name, maxAge)
		if err != nil {
			t.Fatal(err)
		}
		return cl, release
	}
	// Checked just now: nobody asks the registry.
	if cl, _ := claim(b); cl.Claimed || !cl.Found || cl.Root.Digest != top.Digest {
		t.Fatalf("fresh record: %+v, want not claimed, the root", cl)
	}
	// Older than the max age: one claims, the others are told it is busy.
	f.clock.Advance(maxAge + time.Second)
	won, release := claim(b)
	if !won.Claimed || won.Busy {
		t.Fatalf("first claim of a stale record: %+v", won)
	}
	for _, p := range []*s3cache.Cache{a, c} {
		if cl, _ := claim(p); cl.Claimed || !cl.Busy || cl.Root.Digest != top.Digest {
			t.Fatalf("claim while another revalidates: %+v, want busy with the root", cl)
		}
	}
	// The claimant records: the claim is over and the record fresh.
	if err := b.RecordRoot(ctx, root(top, name, f.clock.Now())); err != nil {
		t.Fatal(err)
	}
	release() // no-op: the record ended the claim
	if cl, _ := claim(c); cl.Claimed || cl.Busy {
		t.Fatalf("after the claimant recorded: %+v, want fresh", cl)
	}
	// A claimant that fails releases its claim: the next asker claims.
	f.clock.Advance(maxAge + time.Second)
	if cl, release := claim(a); !cl.Claimed {
		t.Fatalf("claim: %+v", cl)
	} else {
		release()
	}
	if cl, _ := claim(c); !cl.Claimed {
		t.Fatalf("claim after a release: %+v, want claimed", cl)
	}
	// c dies holding it: the claim expires after the claim TTL.
	f.clock.Advance(s3cache.DefaultClaimTTL / 2)
	if cl, _ := claim(a); !cl.Busy {
		t.Fatalf("claim within a dead claimant's TTL: %+v, want busy", cl)
	}
	f.clock.Advance(s3cache.DefaultClaimTTL)
	if cl, _ := claim(a); !cl.Claimed {
		t.Fatalf("claim after a dead claimant's TTL: %+v, want claimed", cl)
	}
}

// TestClaimColdReferenceOnePull: processes that have nothing of a
// reference wait for the one that claimed it, and find its record.
func TestClaimColdReferenceOnePull(t *testing.T) {
	f, puller, top := withImage(t)
	ctx := t.Context()
	const name = "r.example/cold:v1"
	cl, _, err := puller.ClaimRevalidation(ctx, name, time.Minute)
	if err != nil || !cl.Claimed || cl.Found {
		t.Fatalf("first claim of an unknown reference: %+v, %v", cl, err)
	}
	var waits atomic.Int32
	var once sync.Once
	waiter := f.proc()
	s3cache.SetSleep(waiter, func(ctx context.Context, d time.Duration) error {
		waits.Add(1)
		once.Do(func() { // the puller finishes while the waiter waits
			if err := puller.RecordRoot(ctx, root(top, name, f.clock.Now())); err != nil {
				t.Error(err)
			}
		})
		return nil
	})
	got, _, err := waiter.ClaimRevalidation(ctx, name, time.Minute)
	if err != nil || got.Claimed || !got.Found || got.Root.Digest != top.Digest {
		t.Fatalf("claim while another pulls: %+v, %v; want the puller's root", got, err)
	}
	if waits.Load() == 0 {
		t.Fatal("the waiter did not wait")
	}
}
