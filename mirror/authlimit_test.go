package mirror_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/mirror"
)

// authClient sends requests through an Auth's handler from one address.
type authClient struct {
	t       *testing.T
	handler http.Handler
	remote  string
}

// get sends GET /v2/ with basic credentials, none if user is "".
func (c authClient) get(user, pass string) *httptest.ResponseRecorder {
	c.t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/v2/", nil)
	req.RemoteAddr = c.remote
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	c.handler.ServeHTTP(rec, req)
	return rec
}

// want sends a request and checks its status and Retry-After ("" for
// none).
func (c authClient) want(user, pass string, status int, retryAfter string) {
	c.t.Helper()
	rec := c.get(user, pass)
	if rec.Code != status || rec.Header().Get("Retry-After") != retryAfter {
		c.t.Fatalf("%s %s: %d Retry-After %q, want %d Retry-After %q (%s)",
			c.remote, user, rec.Code, rec.Header().Get("Retry-After"), status, retryAfter, rec.Body)
	}
}

func newTestAuth(t *testing.T, c mirror.Checker, clock *testclock.Clock, opts ...mirror.AuthOption) *mirror.Auth {
	t.Helper()
	a, err := mirror.NewAuth(c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	mirror.SetAuthClock(a, clock.Now)
	return a
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})

func TestAuthFailedLoginLimit(t *testing.T) {
	h, err := mirror.ParseHtpasswd(strings.NewReader("alice:" + bcryptHash(t, "pw-a") + "\nbob:" + bcryptHash(t, "pw-b") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	bcrypts := mirror.CountBcrypt(h)
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	a := newTestAuth(t, h, clock, mirror.WithFailedLoginLimit(3, time.Minute), mirror.WithAuthLogger(logger))
	handler := mirror.AccessLog(a.Wrap(ok), logger)
	attacker := authClient{t, handler, "192.0.2.1:40000"}
	user := authClient{t, handler, "192.0.2.2:40000"}
	wantBcrypts := func(want int64) {
		t.Helper()
		if got := bcrypts.Load(); got != want {
			t.Fatalf("%d bcrypts, want %d", got, want)
		}
	}

	// Three guesses are checked; the rest are refused unchecked, an
	// attempt coming back every 20 s.
	for i := range 3 {
		attacker.want("alice", fmt.Sprint("guess-", i), http.StatusUnauthorized, "")
	}
	for i := range 20 {
		attacker.want("alice", fmt.Sprint("more-", i), http.StatusTooManyRequests, "20")
	}
	wantBcrypts(3)
	// Whatever the port, and whatever the credentials: good ones too
	// (else the guesses would learn from what is remembered).
	authClient{t, handler, "192.0.2.1:40001"}.want("bob", "pw-b", http.StatusTooManyRequests, "20")
	// A request without credentials still gets the challenge.
	attacker.want("", "", http.StatusUnauthorized, "")

	// Meanwhile another client pulls with one bcrypt.
	for range 100 {
		user.want("alice", "pw-a", http.StatusOK, "")
	}
	wantBcrypts(4)
	attacker.want("alice", "pw-a", http.StatusTooManyRequests, "20")

	clock.Advance(19 * time.Second)
	attacker.want("alice", "guess-4", http.StatusTooManyRequests, "1")
	clock.Advance(time.Second)
	attacker.want("alice", "guess-4", http.StatusUnauthorized, "")
	attacker.want("alice", "guess-5", http.StatusTooManyRequests, "20")
	wantBcrypts(5)
	// A good password passes once an attempt is back.
	clock.Advance(20 * time.Second)
	attacker.want("bob", "pw-b", http.StatusOK, "")
	wantBcrypts(6)

	// Remembered for a minute, then checked again.
	clock.Advance(21 * time.Second)
	user.want("alice", "pw-a", http.StatusOK, "")
	wantBcrypts(7)

	// A good login does not buy more guesses: bob's credentials and
	// guesses at alice's, alternately, get three guesses checked.
	spy := authClient{t, handler, "192.0.2.3:40000"}
	for i := range 3 {
		spy.want("bob", "pw-b", http.StatusOK, "")
		spy.want("alice", fmt.Sprint("spy-", i), http.StatusUnauthorized, "")
	}
	spy.want("bob", "pw-b", http.StatusTooManyRequests, "20")
	spy.want("alice", "spy-3", http.StatusTooManyRequests, "20")
	wantBcrypts(10)

	got := a.Stats()
	if want := (mirror.AuthStats{Checks: 10, FailedLogins: 7, Limited: 26}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	out := logs.String()
	if n := strings.Count(out, "too many failed logins"); n != 3 {
		t.Errorf("%d records of a client refused, want 3 (one each time it ran out):\n%s", n, out)
	}
	for _, want := range []string{"client=192.0.2.1/32 remote=192.0.2.1:40000 failed_logins=3 per=1m0s retry_after=20s",
		"path=/v2/ status=429"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"pw-a", "pw-b", "guess", "alice"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds %q:\n%s", secret, out)
		}
	}
}

// IPv6 clients are counted by /64; an IPv4-mapped address is the IPv4
// one.
func TestAuthClientAddress(t *testing.T) {
	clock := testclock.New(time.Unix(0, 0))
	never := mirror.CheckerFunc(func(*http.Request) bool { return false })
	handler := newTestAuth(t, never, clock, mirror.WithFailedLoginLimit(1, time.Minute)).Wrap(ok)
	for _, tc := range []struct{ first, same, other string }{
		{"[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:2", "[2001:db8:1:3::1]:1"},
		{"[fe80::1%eth0]:1", "[fe80::2%eth1]:1", "[fe80:0:0:1::1]:1"},
		{"192.0.2.9:1", "[::ffff:192.0.2.9]:2", "192.0.2.10:1"},
		{"203.0.113.5", "203.0.113.5:7", "203.0.113.6"},
	} {
		authClient{t, handler, tc.first}.want("u", "p", http.StatusUnauthorized, "")
		authClient{t, handler, tc.same}.want("u", "p", http.StatusTooManyRequests, "60")
		authClient{t, handler, tc.other}.want("u", "p", http.StatusUnauthorized, "")
	}
}

// However many addresses guess, the clients tracked stay bounded, the
// one that failed longest ago dropped; clients that never fail are not
// tracked.
func TestAuthTrackedClientsBounded(t *testing.T) {
	clock := testclock.New(time.Unix(0, 0))
	a := newTestAuth(t, mirror.CheckerFunc(func(r *http.Request) bool {
		_, pass, _ := r.BasicAuth()
		return pass == "good"
	}), clock, mirror.WithFailedLoginLimit(1, time.Hour))
	mirror.SetAuthBounds(a, 100, 1024, 64)
	handler := a.Wrap(ok)
	for i := range 5000 {
		authClient{t, handler, fmt.Sprintf("10.%d.%d.1:1", i/256, i%256)}.want("u", "bad", http.StatusUnauthorized, "")
		if clients, _ := mirror.AuthSizes(a); clients > 100 {
			t.Fatalf("after %d addresses, %d clients tracked, want at most 100", i+1, clients)
		}
	}
	last := authClient{t, handler, fmt.Sprintf("10.%d.%d.1:1", 4999/256, 4999%256)}
	last.want("u", "bad", http.StatusTooManyRequests, "3600")
	authClient{t, handler, "10.0.0.1:1"}.want("u", "bad", http.StatusUnauthorized, "") // dropped: a fresh bucket

	a = newTestAuth(t, mirror.CheckerFunc(func(*http.Request) bool { return true }), clock)
	for i := range 50 {
		authClient{t, a.Wrap(ok), fmt.Sprintf("172.16.0.%d:1", i)}.want("u", "good", http.StatusOK, "")
	}
	if clients, _ := mirror.AuthSizes(a); clients != 0 {
		t.Errorf("%d clients tracked after good logins only, want 0", clients)
	}
}

// Remembered credentials stay bounded and expire; WithVerifiedTTL(0)
// remembers none.
func TestAuthVerifiedBounded(t *testing.T) {
	clock := testclock.New(time.Unix(0, 0))
	var checks atomic.Int64
	anyone := mirror.CheckerFunc(func(*http.Request) bool { checks.Add(1); return true })
	a := newTestAuth(t, anyone, clock, mirror.WithVerifiedTTL(time.Minute))
	mirror.SetAuthBounds(a, 100, 8, 64)
	c := authClient{t, a.Wrap(ok), "192.0.2.1:1"}
	for i := range 100 {
		c.want(fmt.Sprint("user-", i), "pw", http.StatusOK, "")
		if _, verified := mirror.AuthSizes(a); verified > 8 {
			t.Fatalf("%d credentials remembered, want at most 8", verified)
		}
	}
	c.want("user-99", "pw", http.StatusOK, "")
	if n := checks.Load(); n != 100 {
		t.Errorf("%d checks, want 100 (the last credentials remembered)", n)
	}
	clock.Advance(time.Minute)
	c.want("user-99", "pw", http.StatusOK, "")
	if n := checks.Load(); n != 101 {
		t.Errorf("%d checks, want 101 (expired after a minute)", n)
	}

	checks.Store(0)
	c = authClient{t, newTestAuth(t, anyone, clock, mirror.WithVerifiedTTL(0)).Wrap(ok), "192.0.2.1:1"}
	for range 5 {
		c.want("u", "pw", http.StatusOK, "")
	}
	if n := checks.Load(); n != 5 {
		t.Errorf("WithVerifiedTTL(0): %d checks, want 5", n)
	}
}

// blockingChecker accepts every request once released, counting the
// checks running at once.
type blockingChecker struct {
	entered chan struct{}
	release chan struct{}
	running atomic.Int64
	most    atomic.Int64
	calls   atomic.Int64
}

func (b *blockingChecker) Check(*http.Request) bool {
	b.calls.Add(1)
	n := b.running.Add(1)
	defer b.running.Add(-1)
	if n > b.most.Load() {
		b.most.Store(n)
	}
	b.entered <- struct{}{}
	<-b.release
	return true
}

// One check runs at a time: a request that finds too many waiting is
// answered 503 unchecked, and its client keeps its attempt.
func TestAuthConcurrentChecks(t *testing.T) {
	clock := testclock.New(time.Unix(0, 0))
	b := &blockingChecker{entered: make(chan struct{}), release: make(chan struct{})}
	a := newTestAuth(t, b, clock, mirror.WithConcurrentChecks(1), mirror.WithFailedLoginLimit(1, time.Minute))
	mirror.SetAuthBounds(a, 100, 1024, 0)
	handler := a.Wrap(ok)

	first := make(chan int)
	go func() { first <- authClient{t, handler, "192.0.2.1:1"}.get("a", "pw").Code }()
	<-b.entered
	other := authClient{t, handler, "192.0.2.2:1"}
	other.want("b", "pw", http.StatusServiceUnavailable, "1")
	if clients, _ := mirror.AuthSizes(a); clients != 1 {
		t.Errorf("%d clients tracked while one check runs, want 1 (the busy client's attempt given back)", clients)
	}
	close(b.release)
	if code := <-first; code != http.StatusOK {
		t.Errorf("the first request: %d", code)
	}
	go func() { <-b.entered }()
	other.want("b", "pw", http.StatusOK, "")
	if got := a.Stats(); got.Busy != 1 || got.Checks != 2 || b.most.Load() != 1 {
		t.Errorf("Stats() = %+v, %d checks at once at most, want Busy 1, Checks 2, 1 at once", got, b.most.Load())
	}
}

// Requests arriving together with the same credentials share one check
// and one attempt; they wait their turn for the slot.
func TestAuthSameCredentialsOneCheck(t *testing.T) {
	clock := testclock.New(time.Unix(0, 0))
	b := &blockingChecker{entered: make(chan struct{}), release: make(chan struct{})}
	a := newTestAuth(t, b, clock, mirror.WithFailedLoginLimit(1, time.Minute))
	handler := a.Wrap(ok)

	var wg sync.WaitGroup
	codes := make(chan int, 20)
	wg.Go(func() { codes <- authClient{t, handler, "192.0.2.1:1"}.get("a", "pw").Code })
	<-b.entered
	for range 19 {
		wg.Go(func() { codes <- authClient{t, handler, "192.0.2.1:2"}.get("a", "pw").Code })
	}
	close(b.release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusOK {
			t.Errorf("status %d, want 200", code)
		}
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("%d checks for 20 requests with the same credentials, want 1", n)
	}
}

func TestNewAuthRefuses(t *testing.T) {
	never := mirror.CheckerFunc(func(*http.Request) bool { return false })
	for name, opt := range map[string]mirror.AuthOption{
		"negative limit":     mirror.WithFailedLoginLimit(-1, time.Minute),
		"limit, no window":   mirror.WithFailedLoginLimit(3, 0),
		"negative ttl":       mirror.WithVerifiedTTL(-time.Second),
		"no check at a time": mirror.WithConcurrentChecks(0),
		"nil logger":         mirror.WithAuthLogger(nil),
	} {
		if _, err := mirror.NewAuth(never, opt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := mirror.NewAuth(nil); err == nil {
		t.Error("a nil Checker was accepted")
	}
	if _, err := mirror.NewAuth(never, mirror.WithFailedLoginLimit(0, 0)); err != nil {
		t.Errorf("no limit: %v", err)
	}
}
