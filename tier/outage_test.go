package tier_test

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// overS3 is a tier over a fresh disk near tier and an S3 far tier reached
// at endpoint (the server's own, a silent port, a closed one), with the
// far tier's tries counted, one manual clock for both, and the tier's
// log kept.
type overS3 struct {
	c     *tier.Cache
	far   *s3cache.Cache
	tries *testserver.TryCounter
	clock *testclock.Clock
	log   *testserver.LockedBuffer
}

func newOverS3(t *testing.T, srv *testserver.S3Server, endpoint, bucket string, s3opts ...s3cache.Option) *overS3 {
	t.Helper()
	client, tries := srv.ClientTo(endpoint)
	o := &overS3{tries: tries, clock: testclock.New(time.Now()), log: &testserver.LockedBuffer{}}
	far, err := s3cache.New(client, bucket, "ci/", append(s3opts, s3cache.WithClock(o.clock.Now))...)
	if err != nil {
		t.Fatal(err)
	}
	o.far = far
	o.c, err = tier.New(disk(t), far, tier.WithClock(o.clock.Now),
		tier.WithLogger(slog.New(slog.NewTextHandler(o.log, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.c.Close() })
	return o
}

// warm does to the tier what warming an image of n blobs does to its
// store: a Stat of each blob (a miss), then a Put of it.
func (o *overS3) warm(t *testing.T, seed uint64, n int) []cachetest.Blob {
	t.Helper()
	var blobs []cachetest.Blob
	for i := range n {
		b := cachetest.NewBlob(seed+uint64(i), 1000)
		if _, err := o.c.Stat(t.Context(), b.Digest); !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("Stat of a new blob = %v, want ErrNotFound", err)
		}
		put(t, o.c, b)
		blobs = append(blobs, b)
	}
	return blobs
}

func (o *overS3) logged(level string) int { return strings.Count(o.log.String(), "level="+level) }

// TestFarDownCostsOneFarCall: a far tier that is silent or refuses
// connections costs a 6-blob warm one far call — the one that finds it
// down — not a delay per blob: the other far reads and writes are skipped
// and counted, one warning is logged, LastFarError says why. When the
// down period is over, concurrent callers start one probe between them,
// in the background, and another warning only comes with another outage.
func TestFarDownCostsOneFarCall(t *testing.T) {
	srv := testserver.StartS3(t)
	for _, tc := range []struct {
		name      string
		addr      func(*testing.T) string
		firstCall int64 // tries of the far call that finds it down
	}{
		{"silent", func(t *testing.T) string { return testserver.StartSilent(t).Addr }, 1},
		{"refusing", func(t *testing.T) string { return testserver.ClosedPort(t) }, 3}, // the retryer's 3 attempts
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOverS3(t, srv, "http://"+tc.addr(t), "bucket",
				s3cache.WithTimeouts(s3cache.Timeouts{ResponseHeader: 200 * time.Millisecond}))
			blobs := o.warm(t, 1, 6)
			for _, b := range blobs {
				if _, err := read(t, o.c, b.Digest); err != nil {
					t.Fatalf("near read with the far tier down: %v", err)
				}
			}
			st := o.c.StatsByTier()
			if got := o.tries.Tries(); got != tc.firstCall {
				t.Errorf("a 6-blob warm made %d far tries; want %d, all in the call that found it down", got, tc.firstCall)
			}
			if st.FarErrors != 1 || st.FarSkipped != 2*6-1 {
				t.Errorf("FarErrors %d, FarSkipped %d; want 1 and 11 (6 Stats and 6 Puts, but the first)", st.FarErrors, st.FarSkipped)
			}
			if err := o.c.LastFarError(); !errors.Is(err, cache.ErrOffline) {
				t.Errorf("LastFarError = %v, want ErrOffline", err)
			}
			if n := o.logged("WARN"); n != 1 {
				t.Errorf("%d warnings; want 1\n%s", n, o.log)
			}

			o.clock.Advance(10 * time.Second)
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					if _, err := o.c.Stat(t.Context(), cachetest.NewBlob(100+uint64(i), 10).Digest); !errors.Is(err, cache.ErrNotFound) {
						t.Errorf("Stat while probing = %v, want ErrNotFound", err)
					}
				})
			}
			wg.Wait()
			o.c.Flush() // the probe
			if got := o.tries.Tries() - tc.firstCall; got != tc.firstCall {
				t.Errorf("8 calls after the down period made %d far tries; want one probe's %d", got, tc.firstCall)
			}
			if n := o.logged("WARN"); n != 1 {
				t.Errorf("%d warnings after a failed probe; want still 1\n%s", n, o.log)
			}
		})
	}
}

// TestFarOutageAndRecovery: versitygw stopped (connections refused) and
// started again. The outage costs one far call and one warning; once the
// down period is over, a probe finds the far tier back, the far tier
// serves again, and the record says so; another outage is another
// warning.
func TestFarOutageAndRecovery(t *testing.T) {
	srv := testserver.StartS3(t)
	o := newOverS3(t, srv, srv.Endpoint, srv.NewBucket(t))
	onlyFar := cachetest.NewBlob(50, 1000) // another runner uploaded it
	put(t, o.far, onlyFar)
	o.warm(t, 1, 2)
	if n := o.logged("WARN"); n != 0 {
		t.Fatalf("warnings with the far tier up:\n%s", o.log)
	}

	srv.Stop()
	before := o.tries.Tries()
	o.warm(t, 10, 6)
	if got := o.tries.Tries() - before; got != 3 {
		t.Errorf("a 6-blob warm with the far tier stopped made %d far tries; want 3, the retryer's for one call", got)
	}
	if n := o.logged("WARN"); n != 1 {
		t.Errorf("%d warnings for one outage; want 1\n%s", n, o.log)
	}

	srv.Start(t)
	o.clock.Advance(10 * time.Second)
	if _, err := read(t, o.c, onlyFar.Digest); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Get during the down period = %v; want a miss (and a probe)", err)
	}
	o.c.Flush() // the probe
	if got, err := read(t, o.c, onlyFar.Digest); err != nil || string(got) != string(onlyFar.Data) {
		t.Fatalf("Get after the probe found the far tier back = %v; want the far copy", err)
	}
	if n := o.logged("INFO"); n != 1 || !strings.Contains(o.log.String(), "answers again") {
		t.Errorf("no record of the far tier answering again\n%s", o.log)
	}

	srv.Stop()
	o.warm(t, 20, 1)
	if n := o.logged("WARN"); n != 2 {
		t.Errorf("%d warnings for two outages; want 2\n%s", n, o.log)
	}
	t.Logf("the tier's log:\n%s", o.log)
}

// TestMissingBucketWarnsOnce: a far bucket that does not exist does not
// stop a warm, and is not silent either: one warning naming the bucket,
// LastFarError is s3.ErrNoSuchBucket, the failures are counted.
func TestMissingBucketWarnsOnce(t *testing.T) {
	srv := testserver.StartS3(t)
	o := newOverS3(t, srv, srv.Endpoint, "no-such-bucket")
	o.warm(t, 1, 6)
	if n := o.logged("WARN"); n != 1 || !strings.Contains(o.log.String(), `bucket \"no-such-bucket\" does not exist`) {
		t.Errorf("%d warnings; want 1 naming the bucket\n%s", n, o.log)
	}
	if err := o.c.LastFarError(); !errors.Is(err, s3cache.ErrNoSuchBucket) {
		t.Errorf("LastFarError = %v, want ErrNoSuchBucket", err)
	}
	if st := o.c.StatsByTier(); st.FarErrors < 6 {
		t.Errorf("FarErrors = %d; want each failed far call counted", st.FarErrors)
	}
}
