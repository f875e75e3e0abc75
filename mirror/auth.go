package mirror

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

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

// Checker decides whether a request carries valid client credentials.
// Implementations compare secrets in constant time and never log them.
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

// RequireAuth returns h behind c: a request c refuses, GET /v2/ included
// (clients probe it to learn the challenge), is answered 401 with a
// WWW-Authenticate challenge and an OCI UNAUTHORIZED error body, and never
// reaches h.
func RequireAuth(h http.Handler, c Checker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !c.Check(req) {
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			w.Header().Set("WWW-Authenticate", challenge)
			writeError(w, http.StatusUnauthorized, codeUnauthorized, "authentication required")
			return
		}
		h.ServeHTTP(w, req)
	})
}

// ErrHtpasswd is wrapped by the errors of ParseHtpasswd.
var ErrHtpasswd = errors.New("mirror: htpasswd")

// Htpasswd checks HTTP basic credentials against bcrypt hashes, as
// written by `htpasswd -B` (user:$2y$...). It is safe for concurrent use.
type Htpasswd struct {
	users map[string][]byte // user -> bcrypt hash
	dummy []byte            // hashed for unknown users, so they take as long

	// bcrypt costs tens of milliseconds per check and a pull makes dozens
	// of requests: credentials once verified are remembered, by a SHA-256
	// of user and password, never the password itself.
	mu       sync.Mutex
	verified map[[sha256.Size]byte]struct{}
}

// maxVerified bounds the remembered credentials; past it they are
// forgotten all at once and verified again.
const maxVerified = 1024

// ParseHtpasswd reads an htpasswd file: one user:hash a line, blank lines
// and lines starting with # ignored. Only bcrypt hashes are accepted
// ($2a$, $2b$, $2y$): the MD5, SHA-1 and crypt(3) formats htpasswd can
// also write are too weak to guard a registry and are refused, naming the
// line.
func ParseHtpasswd(r io.Reader) (*Htpasswd, error) {
	h := &Htpasswd{users: map[string][]byte{}, verified: map[[sha256.Size]byte]struct{}{}}
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
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	h.mu.Lock()
	_, known := h.verified[key]
	h.mu.Unlock()
	if known {
		return true
	}
	hash, listed := h.users[user]
	if !listed {
		_ = bcrypt.CompareHashAndPassword(h.dummy, []byte(pass))
		return false
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	h.mu.Lock()
	if len(h.verified) >= maxVerified {
		clear(h.verified)
	}
	h.verified[key] = struct{}{}
	h.mu.Unlock()
	return true
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
