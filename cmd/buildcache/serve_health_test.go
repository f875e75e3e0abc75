//go:build linux

package main

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/buildcache/buildcache/internal/testserver"
)

// readyz GETs /readyz until it answers want (the outcome of a store
// probe answers for 2 s), and returns the body.
func (s *server) readyz(t *testing.T, want int) string {
	t.Helper()
	deadline := time.Now().Add(serveWait)
	for {
		resp, body := get(t, http.DefaultClient, "http://"+s.addr+"/readyz", nil)
		if resp.StatusCode == want {
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz answered %d %q for %v, want %d:\n%s", resp.StatusCode, body, serveWait, want, s.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// /healthz and /readyz need no credentials, are not logged and ask no
// upstream; /readyz follows the cache's file system (read-only, full)
// and logs only its changes.
func TestServeHealth(t *testing.T) {
	up := newCountingUpstream(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, file, "ci:"+string(hash)+"\n")
	const opts = "size=4194304"
	mnt := testserver.MountTmpfs(t, opts)
	s := startServeIn(t, filepath.Join(mnt, "cache"), "--upstream", "test.example=http://"+up.host, "--htpasswd", file)

	for range 10 {
		for _, p := range []string{"/healthz", "/readyz"} {
			resp, body := get(t, http.DefaultClient, "http://"+s.addr+p, nil)
			if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
				t.Fatalf("GET %s without credentials = %s %q, want 200 ok", p, resp.Status, body)
			}
		}
	}
	resp, body := get(t, http.DefaultClient, "http://"+s.addr+"/v2/", nil)
	checkUnauthorized(t, "/v2/ without credentials", resp, body)
	s.stderr.await(t, regexp.MustCompile(`(path=/v2/)`), nil)
	log := s.stderr.String()
	if strings.Contains(log, "/healthz") || strings.Contains(log, "/readyz") {
		t.Errorf("probes were logged:\n%s", log)
	}
	if n := strings.Count(log, "msg=ready"); n != 1 {
		t.Errorf("%d msg=ready records for 10 /readyz, want the first only:\n%s", n, log)
	}
	if n := up.requests.Load(); n != 0 {
		t.Errorf("the probes made %d upstream requests", n)
	}

	testserver.RemountTmpfs(t, mnt, opts, true)
	body2 := s.readyz(t, http.StatusServiceUnavailable)
	testserver.RemountTmpfs(t, mnt, opts, false)
	if body2 != "not ready: store not writable\n" {
		t.Errorf("/readyz on a read-only cache: %q", body2)
	}
	s.stderr.await(t, regexp.MustCompile(`msg="not ready" reason="store not writable" error="[^"]*(read-only file system)`), nil)
	s.readyz(t, http.StatusOK)

	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(buf); err != nil {
			break // ENOSPC: a short write filled the last page first
		}
	}
	filler.Close()
	if got := s.readyz(t, http.StatusServiceUnavailable); got != "not ready: store not writable\n" {
		t.Errorf("/readyz on a full cache: %q", got)
	}
	s.stderr.await(t, regexp.MustCompile(`msg="not ready" reason="store not writable" error="[^"]*(no space left on device)`), nil)
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	s.readyz(t, http.StatusOK)
	if n := strings.Count(s.stderr.String(), `msg="not ready"`); n != 2 {
		t.Errorf("%d not-ready records for two outages:\n%s", n, s.stderr)
	}
}

// On SIGTERM /readyz answers 503 at once, while --shutdown-delay keeps
// the mirror serving; then it exits 0.
func TestServeShutdownNotReady(t *testing.T) {
	up := newCountingUpstream(t)
	s := startServe(t, "--upstream", "test.example=http://"+up.host, "--shutdown-delay", "3s")
	s.readyz(t, http.StatusOK)
	s.stop()
	s.stderr.await(t, regexp.MustCompile(`msg="(not ready)" reason="shutting down"`), nil)
	if got := s.readyz(t, http.StatusServiceUnavailable); got != "not ready: shutting down\n" {
		t.Errorf("/readyz during the shutdown delay: %q", got)
	}
	if resp, _ := get(t, http.DefaultClient, "http://"+s.addr+"/healthz", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz during the shutdown delay: %s", resp.Status)
	}
	if code := s.shutdown(t); code != 0 {
		t.Errorf("serve exited %d:\n%s", code, s.stderr)
	}
}
