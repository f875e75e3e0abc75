package mirror

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// codeUnauthorized is the distribution spec's code for a request without
// valid credentials.
const codeUnauthorized = "UNAUTHORIZED"

// challenge is the WWW-Authenticate value of every 401. It is a Basic
// challenge whatever the checker: Docker, containerd and
// go-containerregistry answer a Bearer challenge by asking its realm for
// a token, which a static token has no server for, while a client sending
// a static "Authorization: Bearer" header never waits for a challenge.
const challenge = `Basic realm="buildcache", charset="UTF-8"`

// codeTooManyRequests is the distribution spec's code for a client that
// has to slow down.
const codeTooManyRequests = "TOOMANYREQUESTS"

// Checker decides whether a request carries valid client credentials.
// Implementations compare secrets in constant time and never log them.
// An Auth (RequireAuth) remembers a yes by the request's Authorization
// header: a Checker that decides on more than that header needs
// WithVerifiedTTL(0).
type Checker interface {
	Check(req *http.Request) bool
}

// CheckerFunc adapts a function to a Checker.
type CheckerFunc func(req *http.Request) bool

// Check calls f.
func (f CheckerFunc) Check(req *http.Request) bool { return f(req) }

// AnyOf accepts a request that one of checkers accepts.
func AnyOf(checkers ...Checker) Checker {
	return CheckerFunc(func(req *http.Request) bool {
		for _, c := range checkers {
			if c.Check(req) {
				return true
			}
		}
		return false
	})
}

// RequireAuth returns h behind c, with an Auth's defaults:
// NewAuth(c).Wrap(h). It panics if c is nil.
func RequireAuth(h http.Handler, c Checker) http.Handler {
	a, err := NewAuth(c)
	if err != nil {
		panic(err)
	}
	return a.Wrap(h)
}

// The defaults of an Auth's options.
const (
	DefaultFailedLogins     = 10
	DefaultFailedLoginsPer  = time.Minute
	DefaultVerifiedTTL      = time.Minute
	DefaultConcurrentChecks = 1
)

// The bounds of an Auth's memory and queue.
const (
	maxTrackedClients = 10000 // failed-login buckets, about 150 bytes each
	maxVerified       = 1024  // remembered credentials
	maxWaitingChecks  = 64    // requests waiting for a check slot
	busyRetryAfter    = time.Second
)

// Auth puts handlers behind a Checker (Wrap), and keeps the checking cheap
// for clients that hold credentials and bounded for those that guess
// them. A request it refuses never reaches the handler; every refusal has
// an OCI error body and Docker-Distribution-API-Version.
//
//   - A request without credentials (no Authorization header: clients
//     probe GET /v2/ so to learn the challenge) is handed to the Checker;
//     refused, it is answered 401 with a Basic WWW-Authenticate challenge
//     and UNAUTHORIZED, and counts for nothing below.
//   - Credentials the Checker accepted are remembered for
//     WithVerifiedTTL (a minute), by an HMAC-SHA-256 of them under a key
//     drawn for each Auth, never the credentials themselves, at most 1024:
//     a client pulling an image makes dozens of requests and pays for
//     one check (a bcrypt, for an Htpasswd) a minute. Requests arriving
//     with the same credentials while they are checked wait for that
//     check.
//   - Failed logins are limited per client address (an IPv4 address, an
//     IPv6 /64): WithFailedLoginLimit (10 a minute, in a burst of 10).
//     A client with none left is answered 429 TOOMANYREQUESTS with
//     Retry-After, its credentials not looked at, good ones included, so
//     that its guesses cost nothing and learn nothing, until an attempt
//     comes back (every 6 s by default). A check takes an attempt while
//     it runs and gives it back if it passes, so concurrent guesses are
//     bound too, and a good login never restores a failed one. At most
//     10,000 clients are tracked, the one that failed longest ago
//     dropped first.
//   - At most WithConcurrentChecks (1) checks run at once, however many
//     clients guess, so that guesses from many addresses take a core at
//     most while remembered clients are served; a request that finds 64
//     others waiting for a check, or whose client leaves while it waits,
//     is answered 503 UNAVAILABLE with Retry-After.
//
// The client address is the connection's (http.Request.RemoteAddr; no
// X-Forwarded-For, which any client can write): behind a reverse proxy
// every client shares the proxy's, and one guesser locks all out, so
// give WithFailedLoginLimit(0, 0) there and limit at the proxy. Stats
// counts checks, failed logins and refusals; WithAuthLogger logs a client
// when it is first refused. An Auth is safe for concurrent use, and
// handlers it wraps share its limits.
type Auth struct {
	c        Checker
	o        authOptions
	key      [32]byte // of the HMAC of remembered credentials
	failures *failLimiter
	verified *verifiedSet
	slots    chan struct{} // a token per check running
	waiting  atomic.Int64  // requests waiting for a slot
	maxWait  int64
	now      func() time.Time

	mu      sync.Mutex
	pending map[[32]byte]*pendingCheck // by sum

	checks, failed, limited, busy atomic.Uint64
}

type authOptions struct {
	failN   int
	failPer time.Duration
	ttl     time.Duration
	checks  int
	logger  *slog.Logger
}

// AuthOption configures an Auth.
type AuthOption func(*authOptions) error

// WithFailedLoginLimit allows each client address n failed logins in a
// burst, given back at n per per; n = 0 (per is then ignored) turns the
// limit off. Default: DefaultFailedLogins (10) per DefaultFailedLoginsPer
// (a minute).
func WithFailedLoginLimit(n int, per time.Duration) AuthOption {
	return func(o *authOptions) error {
		if n < 0 || (n > 0 && per <= 0) {
			return fmt.Errorf("mirror: WithFailedLoginLimit(%d, %v): want n >= 0 and, for n > 0, per > 0", n, per)
		}
		o.failN, o.failPer = n, per
		return nil
	}
}

// WithVerifiedTTL remembers accepted credentials for d; 0 checks every
// request. Default: DefaultVerifiedTTL (a minute).
func WithVerifiedTTL(d time.Duration) AuthOption {
	return func(o *authOptions) error {
		if d < 0 {
			return errors.New("mirror: WithVerifiedTTL: a negative duration")
		}
		o.ttl = d
		return nil
	}
}

// WithConcurrentChecks runs at most n checks of credentials not
// remembered at once. Default: DefaultConcurrentChecks (1), a bcrypt at a
// time.
func WithConcurrentChecks(n int) AuthOption {
	return func(o *authOptions) error {
		if n < 1 {
			return fmt.Errorf("mirror: WithConcurrentChecks(%d): want at least 1", n)
		}
		o.checks = n
		return nil
	}
}

// WithAuthLogger logs to logger, at Warn, each client address that runs
// out of failed logins, once until it has some again (the access log has
// each refused request). Default: none.
func WithAuthLogger(logger *slog.Logger) AuthOption {
	return func(o *authOptions) error {
		if logger == nil {
			return errors.New("mirror: WithAuthLogger: nil logger")
		}
		o.logger = logger
		return nil
	}
}

// NewAuth returns an Auth checking credentials with c.
func NewAuth(c Checker, opts ...AuthOption) (*Auth, error) {
	if c == nil {
		return nil, errors.New("mirror: NewAuth: nil Checker")
	}
	o := authOptions{
		failN: DefaultFailedLogins, failPer: DefaultFailedLoginsPer,
		ttl: DefaultVerifiedTTL, checks: DefaultConcurrentChecks,
		logger: slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	a := &Auth{
		c: c, o: o,
		failures: newFailLimiter(o.failN, o.failPer, maxTrackedClients),
		verified: &verifiedSet{ttl: o.ttl, max: maxVerified, sums: map[[32]byte]time.Time{}},
		slots:    make(chan struct{}, o.checks),
		maxWait:  maxWaitingChecks,
		now:      time.Now,
		pending:  map[[32]byte]*pendingCheck{},
	}
	rand.Read(a.key[:])
	return a, nil
}

// AuthStats counts an Auth's work and refusals since it was made.
type AuthStats struct {
	// Checks is the credentials handed to the Checker: a bcrypt each
	// for an Htpasswd. Remembered credentials, refused requests and
	// requests without credentials are not counted.
	Checks uint64
	// FailedLogins is the credentials the Checker refused (401).
	FailedLogins uint64
	// Limited is the requests refused with 429, unchecked, because their
	// client address had no failed logins left.
	Limited uint64
	// Busy is the requests refused with 503, unchecked, because too many
	// were waiting for a check or their client left while waiting.
	Busy uint64
}

// Stats returns a's counters.
func (a *Auth) Stats() AuthStats {
	return AuthStats{Checks: a.checks.Load(), FailedLogins: a.failed.Load(), Limited: a.limited.Load(), Busy: a.busy.Load()}
}

// Wrap returns h behind a.
func (a *Auth) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		v, wait := a.admit(req)
		if v == admitted {
			h.ServeHTTP(w, req)
			return
		}
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		switch v {
		case limited:
			w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)))
			writeError(w, http.StatusTooManyRequests, codeTooManyRequests, "too many failed logins from this address: retry later")
		case busy:
			w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)))
			writeError(w, http.StatusServiceUnavailable, codeUnavailable, "too many logins being checked: retry later")
		default:
			w.Header().Set("WWW-Authenticate", challenge)
			writeError(w, http.StatusUnauthorized, codeUnauthorized, "authentication required")
		}
	})
}

// verdict is what admit decided.
type verdict int

const (
	admitted verdict = iota
	unauthorized
	limited // the client has no failed logins left
	busy    // no check slot
)

// admit decides req's fate, as Auth's doc says, and for limited and busy
// how long the client should wait.
func (a *Auth) admit(req *http.Request) (verdict, time.Duration) {
	header := req.Header.Get("Authorization")
	if header == "" {
		if a.c.Check(req) {
			return admitted, 0
		}
		return unauthorized, 0
	}
	client := clientKey(req.RemoteAddr)
	if ok, wait, first := a.failures.allows(client, a.now()); !ok {
		a.limited.Add(1)
		if first {
			a.o.logger.LogAttrs(req.Context(), slog.LevelWarn, "too many failed logins: refusing the client's logins for a while",
				slog.String("client", client.String()), slog.String("remote", req.RemoteAddr),
				slog.Int("failed_logins", a.o.failN), slog.Duration("per", a.o.failPer), slog.Duration("retry_after", wait))
		}
		return limited, wait
	}
	sum := a.sum(req, header)
	if a.verified.has(sum, a.now()) {
		return admitted, 0
	}
	// Clients open several connections with the same credentials at
	// once: one check answers them all, and only its client pays an
	// attempt for it.
	p, lead := a.join(sum)
	if lead {
		defer a.finish(sum, p)
		p.v, p.wait = a.lead(req, client, sum)
		return p.v, p.wait
	}
	select {
	case <-p.done:
		if p.v == admitted || p.v == unauthorized {
			return p.v, 0
		}
	case <-req.Context().Done():
	}
	a.busy.Add(1)
	return busy, busyRetryAfter
}

// pendingCheck is a check of credentials in progress, that requests with
// the same credentials wait for.
type pendingCheck struct {
	done chan struct{} // closed once v and wait are set
	v    verdict
	wait time.Duration
}

// join returns the check of sum in progress, or starts one that the
// caller leads (and finishes).
func (a *Auth) join(sum [32]byte) (p *pendingCheck, lead bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.pending[sum]; ok {
		return p, false
	}
	p = &pendingCheck{done: make(chan struct{})}
	a.pending[sum] = p
	return p, true
}

func (a *Auth) finish(sum [32]byte, p *pendingCheck) {
	a.mu.Lock()
	delete(a.pending, sum)
	a.mu.Unlock()
	close(p.done)
}

// lead checks credentials for client: it takes one of the client's
// attempts, waits for a slot, runs the Checker, and gives the attempt
// back unless the Checker said no.
func (a *Auth) lead(req *http.Request, client netip.Prefix, sum [32]byte) (verdict, time.Duration) {
	if a.verified.has(sum, a.now()) {
		return admitted, 0 // by a check that finished since admit looked
	}
	if ok, wait := a.failures.take(client, a.now()); !ok {
		a.limited.Add(1)
		return limited, wait
	}
	if !a.acquire(req.Context()) {
		a.failures.settle(client, false, a.now())
		a.busy.Add(1)
		return busy, busyRetryAfter
	}
	a.checks.Add(1)
	good := func() bool {
		defer func() { <-a.slots }()
		return a.c.Check(req)
	}()
	a.failures.settle(client, !good, a.now())
	if !good {
		a.failed.Add(1)
		return unauthorized, 0
	}
	a.verified.add(sum, a.now())
	return admitted, 0
}

// acquire takes a check slot, waiting while ctx lasts unless too many
// wait already.
func (a *Auth) acquire(ctx context.Context) bool {
	select {
	case a.slots <- struct{}{}:
		return true
	default:
	}
	if a.waiting.Add(1) > a.maxWait {
		a.waiting.Add(-1)
		return false
	}
	defer a.waiting.Add(-1)
	select {
	case a.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// sum is the HMAC that remembers req's credentials: basic credentials by
// user and password (a user name has no colon), however they were
// encoded, other schemes by the header.
func (a *Auth) sum(req *http.Request, header string) [32]byte {
	m := hmac.New(sha256.New, a.key[:])
	if user, pass, ok := req.BasicAuth(); ok {
		io.WriteString(m, "basic "+user+":"+pass)
	} else {
		io.WriteString(m, "header "+header)
	}
	var s [32]byte
	m.Sum(s[:0])
	return s
}

// ErrHtpasswd is wrapped by the errors of ParseHtpasswd.
var ErrHtpasswd = errors.New("mirror: htpasswd")

// Htpasswd checks HTTP basic credentials against bcrypt hashes, as
// written by `htpasswd -B` (user:$2y$...). It is safe for concurrent use.
// Check runs a bcrypt on every call (tens of milliseconds at the default
// cost, for unknown users too): put it behind an Auth (RequireAuth),
// which remembers the credentials it accepted and bounds the bcrypts
// guessers can cause.
type Htpasswd struct {
	users   map[string][]byte // user -> bcrypt hash
	dummy   []byte            // hashed for unknown users, so they take as long
	compare func(hash, password []byte) error
}

// ParseHtpasswd reads an htpasswd file: one user:hash a line, blank lines
// and lines starting with # ignored. Only bcrypt hashes are accepted
// ($2a$, $2b$, $2y$): the MD5, SHA-1 and crypt(3) formats htpasswd can
// also write are too weak to guard a registry and are refused, naming the
// line.
func ParseHtpasswd(r io.Reader) (*Htpasswd, error) {
	h := &Htpasswd{users: map[string][]byte{}, compare: bcrypt.CompareHashAndPassword}
	sc := bufio.NewScanner(r)
	cost := bcrypt.DefaultCost
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		user, hash, ok := strings.Cut(text, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%w: line %d: not user:hash", ErrHtpasswd, line)
		}
		c, err := bcrypt.Cost([]byte(hash))
		if err != nil || !strings.HasPrefix(hash, "$2") {
			return nil, fmt.Errorf("%w: line %d (user %q): not a bcrypt hash (write it with htpasswd -B)", ErrHtpasswd, line, user)
		}
		if _, dup := h.users[user]; dup {
			return nil, fmt.Errorf("%w: line %d: user %q appears twice", ErrHtpasswd, line, user)
		}
		if len(h.users) == 0 {
			cost = c
		}
		h.users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHtpasswd, err)
	}
	if len(h.users) == 0 {
		return nil, fmt.Errorf("%w: no users", ErrHtpasswd)
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("buildcache-unknown-user"), cost)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHtpasswd, err)
	}
	h.dummy = dummy
	return h, nil
}

// Check reports whether req carries basic credentials of a listed user.
func (h *Htpasswd) Check(req *http.Request) bool {
	user, pass, ok := req.BasicAuth()
	if !ok {
		return false
	}
	hash, listed := h.users[user]
	if !listed {
		_ = h.compare(h.dummy, []byte(pass))
		return false
	}
	return h.compare(hash, []byte(pass)) == nil
}

// BearerToken checks a static token, sent as "Authorization: Bearer
// TOKEN" or as the password of basic credentials with any user name (so
// that `docker login` and a containerd hosts.toml header both work).
type BearerToken struct {
	sum [sha256.Size]byte
}

// NewBearerToken returns a checker of token, which must not be empty.
// Surrounding white space (a file's final newline) is trimmed.
func NewBearerToken(token string) (*BearerToken, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, errors.New("mirror: empty bearer token")
	}
	return &BearerToken{sum: sha256.Sum256([]byte(token))}, nil
}

// Check reports whether req carries the token.
func (b *BearerToken) Check(req *http.Request) bool {
	var got string
	if _, pass, ok := req.BasicAuth(); ok {
		got = pass
	} else if scheme, tok, ok := strings.Cut(req.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		got = strings.TrimSpace(tok)
	} else {
		return false
	}
	// Comparing hashes keeps the comparison constant-time in the
	// token's length too.
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], b.sum[:]) == 1
}
