package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/internal/testserver"
	s3cache "github.com/buildcache/buildcache/s3"
)

// hangGuard bounds a test that would hang without the bounds it tests:
// generous, so that it never decides a test on a loaded machine.
const hangGuard = 2 * time.Minute

// TestSilentEndpointDefaultTimeouts: with no option at all, a call to an
// endpoint that accepts connections and never answers ends, with an
// error that is ErrOffline and says what it waited for, after one try.
// (It used to wait for ever, in every retry.)
func TestSilentEndpointDefaultTimeouts(t *testing.T) {
	srv := testserver.StartS3(t)
	silent := testserver.StartSilent(t)
	client, tries := srv.ClientTo("http://" + silent.Addr)
	c, err := s3cache.New(client, "bucket", "ci/")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	_, err = c.Stat(ctx, cachetest.NewBlob(1, 10).Digest)
	if ctx.Err() != nil {
		t.Fatalf("Stat on a silent endpoint still waiting after %v", hangGuard)
	}
	if !errors.Is(err, cache.ErrOffline) || !strings.Contains(err.Error(), "no response headers within 10s") {
		t.Fatalf("Stat on a silent endpoint = %v; want ErrOffline saying no response headers within 10s", err)
	}
	if n := tries.Tries(); n != 1 {
		t.Errorf("%d tries; want 1 (a silent endpoint is not asked again)", n)
	}
}

// TestUnreachableEndpoint: every call on an endpoint that is silent or
// refuses connections fails with ErrOffline naming the endpoint, and,
// once one call found it down, each call makes one try, not the
// retryer's, until it has been down for 10 s.
func TestUnreachableEndpoint(t *testing.T) {
	srv := testserver.StartS3(t)
	for _, tc := range []struct {
		name      string
		addr      func(*testing.T) string
		firstCall int64 // tries of the call that finds it down
		says      string
	}{
		{"silent", func(t *testing.T) string { return testserver.StartSilent(t).Addr }, 1, "no response headers within"},
		{"refusing", func(t *testing.T) string { return testserver.ClosedPort(t) }, 3, "connection refused"}, // the retryer's 3 attempts
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := "http://" + tc.addr(t)
			client, tries := srv.ClientTo(endpoint)
			clock := testclock.New(time.Now())
			c, err := s3cache.New(client, "bucket", "ci/", s3cache.WithClock(clock.Now),
				s3cache.WithTimeouts(s3cache.Timeouts{ResponseHeader: 200 * time.Millisecond}))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
			defer cancel()
			b := cachetest.NewBlob(2, 1000)
			errs := opErrors(ctx, c, b.Digest, b.Data)
			if ctx.Err() != nil {
				t.Fatalf("still waiting after %v", hangGuard)
			}
			for op, err := range errs {
				if !errors.Is(err, cache.ErrOffline) || !strings.Contains(err.Error(), endpoint) || !strings.Contains(err.Error(), tc.says) {
					t.Errorf("%s = %v; want ErrOffline naming %s and saying %q", op, err, endpoint, tc.says)
				}
			}
			if got, want := tries.Tries(), tc.firstCall+int64(len(errs))-1; got != want {
				t.Errorf("%d calls made %d tries; want %d: %d for the first, then one each", len(errs), got, want, tc.firstCall)
			}
			clock.Advance(10 * time.Second)
			before := tries.Tries()
			if _, err := c.Stat(ctx, b.Digest); !errors.Is(err, cache.ErrOffline) {
				t.Fatalf("Stat 10 s later = %v, want ErrOffline", err)
			}
			if got := tries.Tries() - before; got != tc.firstCall {
				t.Errorf("10 s later a call made %d tries; want %d, as the first did", got, tc.firstCall)
			}
		})
	}
}

// TestOutageEndsWithAnswer: an S3 server that stops (connections
// refused) and comes back within the 10 s it is known down serves the
// next call at once, with one try, and the one after it gets the
// retryer's tries again should it go down anew.
func TestOutageEndsWithAnswer(t *testing.T) {
	srv := testserver.StartS3(t)
	client, tries := srv.ClientTo(srv.Endpoint)
	clock := testclock.New(time.Now())
	c, err := s3cache.New(client, srv.NewBucket(t), "ci/", s3cache.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	b := cachetest.NewBlob(3, 1000)
	if err := c.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatal(err)
	}
	stat := func() (int64, error) {
		before := tries.Tries()
		_, err := c.Stat(t.Context(), b.Digest)
		return tries.Tries() - before, err
	}
	srv.Stop()
	if n, err := stat(); !errors.Is(err, cache.ErrOffline) || n != 3 {
		t.Fatalf("Stat with the server stopped: %d tries, %v; want 3 (the retryer's), ErrOffline", n, err)
	}
	srv.Start(t)
	if n, err := stat(); err != nil || n != 1 {
		t.Fatalf("Stat with the server back: %d tries, %v; want 1, success", n, err)
	}
	srv.Stop()
	if n, err := stat(); !errors.Is(err, cache.ErrOffline) || n != 3 {
		t.Fatalf("Stat with the server stopped again: %d tries, %v; want 3: the answer ended the first outage", n, err)
	}
}

// TestStalledBodies: a server that stops sending a Get's body, or stops
// taking a Put's, fails the call within the Stall bound; nothing half is
// served or stored.
func TestStalledBodies(t *testing.T) {
	srv := testserver.StartS3(t)
	// fresh is a Cache of a new bucket through a gate, with a Stall
	// bound short enough for a test and ResponseHeader long enough for
	// a loaded machine.
	fresh := func(t *testing.T) (*s3cache.Cache, *testserver.Gate) {
		gate := testserver.StartGate(t, strings.TrimPrefix(srv.Endpoint, "http://"))
		client, _ := srv.ClientTo("http://" + gate.Addr)
		c, err := s3cache.New(client, srv.NewBucket(t), "ci/",
			s3cache.WithTimeouts(s3cache.Timeouts{ResponseHeader: 5 * time.Second, Stall: time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		return c, gate
	}
	t.Run("get", func(t *testing.T) {
		c, gate := fresh(t)
		b := bigBlob(7, 16<<20) // more than the socket buffers and the read-ahead hold
		direct, err := s3cache.New(srv.Client(), c.Bucket(), "ci/")
		if err != nil {
			t.Fatal(err)
		}
		if err := direct.Put(t.Context(), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
		defer cancel()
		rc, err := c.Get(ctx, b.Digest)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		gate.Silence()
		_, err = io.Copy(io.Discard, rc)
		if ctx.Err() != nil {
			t.Fatalf("Get's body still waiting after %v", hangGuard)
		}
		if err == nil || !strings.Contains(err.Error(), "no bytes of the body within 1s") {
			t.Fatalf("reading a stalled body = %v; want the Stall bound", err)
		}
	})
	t.Run("put", func(t *testing.T) {
		c, gate := fresh(t)
		b := bigBlob(8, 16<<20)
		ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
		defer cancel()
		r := &hookReader{r: bytes.NewReader(b.Data), at: 6 << 20, hook: gate.Silence}
		err := c.Put(ctx, b.Digest, int64(len(b.Data)), r)
		if ctx.Err() != nil {
			t.Fatalf("Put still waiting after %v", hangGuard)
		}
		if !errors.Is(err, cache.ErrOffline) {
			t.Fatalf("Put to a server that stopped taking the body = %v; want ErrOffline", err)
		}
		gate.Resume()
		expectNothingStored(t, c, b.Digest)
	})
}
