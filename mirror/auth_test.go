package mirror_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/buildcache/buildcache/mirror"
)

func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestParseHtpasswdRefuses(t *testing.T) {
	good := bcryptHash(t, "pw")
	for name, file := range map[string]string{
		"md5":       "ci:$apr1$abcdefgh$0123456789abcdefghijkl\n",
		"sha1":      "ci:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
		"plain":     "ci:password\n",
		"no colon":  "ci\n",
		"no user":   ":" + good + "\n",
		"duplicate": "ci:" + good + "\nci:" + good + "\n",
		"empty":     "# nobody\n\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := mirror.ParseHtpasswd(strings.NewReader(file)); !errors.Is(err, mirror.ErrHtpasswd) {
				t.Fatalf("ParseHtpasswd: %v, want ErrHtpasswd", err)
			}
		})
	}
}

func TestRequireAuth(t *testing.T) {
	// htpasswd -B writes $2y$; Go's bcrypt writes $2a$: both are read.
	y := "$2y$" + strings.TrimPrefix(bcryptHash(t, "pw-y"), "$2a$")
	h, err := mirror.ParseHtpasswd(strings.NewReader("# users\nalice:" + bcryptHash(t, "pw-a") + "\n\nbob:" + y + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mirror.NewBearerToken("tok-1\n")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	reached := 0
	handler := mirror.AccessLog(mirror.RequireAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		w.Write([]byte("ok"))
	}), mirror.AnyOf(h, tok)), slog.New(slog.NewTextHandler(&logs, nil)))

	for _, tc := range []struct {
		name   string
		header string
		user   string
		pass   string
		want   int
	}{
		{"nothing", "", "", "", http.StatusUnauthorized},
		{"alice", "", "alice", "pw-a", http.StatusOK},
		{"alice again, remembered", "", "alice", "pw-a", http.StatusOK},
		{"bob with $2y$", "", "bob", "pw-y", http.StatusOK},
		{"wrong password", "", "alice", "pw-y", http.StatusUnauthorized},
		{"unknown user", "", "carol", "pw-a", http.StatusUnauthorized},
		{"bearer token", "Bearer tok-1", "", "", http.StatusOK},
		{"bearer, lower case", "bearer tok-1", "", "", http.StatusOK},
		{"token as a basic password", "", "anyone", "tok-1", http.StatusOK},
		{"wrong token", "Bearer tok-2", "", "", http.StatusUnauthorized},
		{"token prefix", "Bearer tok-", "", "", http.StatusUnauthorized},
		{"other scheme", "Digest tok-1", "", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/v2/team/app/manifests/v1?ns=docker.io&secret=x", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			rec := httptest.NewRecorder()
			before := reached
			handler.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
			if tc.want != http.StatusUnauthorized {
				return
			}
			if reached != before {
				t.Error("a refused request reached the handler")
			}
			if c := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(c, `Basic realm="buildcache"`) {
				t.Errorf("WWW-Authenticate %q", c)
			}
			var body struct {
				Errors []struct{ Code string } `json:"errors"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Code != "UNAUTHORIZED" {
				t.Errorf("body %q, want one UNAUTHORIZED error", rec.Body.String())
			}
		})
	}
	out := logs.String()
	for _, secret := range []string{"pw-a", "pw-y", "tok-1", "secret", "Authorization"} {
		if strings.Contains(out, secret) {
			t.Errorf("the access log holds %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"path=/v2/team/app/manifests/v1 ns=docker.io status=401", "status=200 bytes=2"} {
		if !strings.Contains(out, want) {
			t.Errorf("the access log lacks %q:\n%s", want, out)
		}
	}
}

func TestNewBearerTokenEmpty(t *testing.T) {
	if _, err := mirror.NewBearerToken(" \n"); err == nil {
		t.Fatal("an empty token was accepted")
	}
}

// A handler that aborts its response (the mirror does, for bytes that
// fail verification) is logged as aborted, and the abort goes on.
func TestAccessLogAborted(t *testing.T) {
	var logs bytes.Buffer
	h := mirror.AccessLog(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("partial"))
		panic(http.ErrAbortHandler)
	}), slog.New(slog.NewTextHandler(&logs, nil)))
	func() {
		defer func() {
			if r := recover(); r != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler", r)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v2/a/blobs/sha256:00", nil))
	}()
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "bytes=7") || !strings.Contains(out, "aborted=true") {
		t.Errorf("log of an aborted response: %s", out)
	}
}

// Guessing passwords costs a bcrypt a guess only up to the limit, then
// nothing; a client with good credentials meanwhile pays one check, not
// one a request.
func TestRequireAuthLimitsFailedLogins(t *testing.T) {
	h, err := mirror.ParseHtpasswd(strings.NewReader("alice:" + bcryptHash(t, "pw-a") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	var checks atomic.Int64
	handler := mirror.RequireAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		mirror.CheckerFunc(func(r *http.Request) bool {
			checks.Add(1)
			return h.Check(r)
		}))
	login := func(remote, pass string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		req.RemoteAddr = remote
		req.SetBasicAuth("alice", pass)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec
	}
	var rec *httptest.ResponseRecorder
	for i := range 50 {
		rec = login("198.51.100.7:40000", fmt.Sprint("guess-", i))
	}
	// The clock moves during the test: an attempt may come back.
	if n := checks.Load(); n > mirror.DefaultFailedLogins+1 {
		t.Errorf("50 guesses from one address ran %d checks, want at most %d", n, mirror.DefaultFailedLogins+1)
	}
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "TOOMANYREQUESTS") {
		t.Errorf("the 50th guess: %d Retry-After %q %s, want 429 with Retry-After and TOOMANYREQUESTS",
			rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	checks.Store(0)
	for range 100 {
		if rec := login("198.51.100.8:40000", "pw-a"); rec.Code != http.StatusOK {
			t.Fatalf("a good login from another address: %d", rec.Code)
		}
	}
	if n := checks.Load(); n != 1 {
		t.Errorf("100 requests with good credentials ran %d checks, want 1", n)
	}
}
