package main

import (
	"cmp"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
)

// cliBounded runs the command and fails the test if it hangs.
func cliBounded(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	type result struct {
		stdout, stderr string
		code           int
	}
	done := make(chan result, 1)
	go func() {
		o, e, c := cli(t, args...)
		done <- result{o, e, c}
	}()
	select {
	case r := <-done:
		return r.stdout, r.stderr, r.code
	case <-time.After(30 * time.Second):
		t.Fatalf("buildcache %s has not returned after 30s", strings.Join(args, " "))
		return "", "", 0
	}
}

// warmedThenSilent warms a cache with an image of a registry that then
// goes silent (accepts connections, never answers), and returns the
// cache's directory and the image.
func warmedThenSilent(t *testing.T) (dir, ref string) {
	t.Helper()
	reg := testserver.StartSilentRegistry(t)
	ref = reg.Host + "/app:v1"
	testimage.ForTest(t).Push(ref, testimage.ForTest(t).RandomIndex([]string{"linux/amd64"}, 256, 1))
	dir = t.TempDir()
	if _, stderr, code := cli(t, "--cache", dir, "warm", "--platform=linux/amd64", ref); code != 0 {
		t.Fatalf("warm: exit %d\n%s", code, stderr)
	}
	reg.Silence()
	return dir, ref
}

// With --timeout, a registry that accepts connections and never answers
// is unreachable: a cached image is served stale (exit 0), an uncached one
// exits 3, and the command returns.
func TestTimeoutFlagServesStaleFromASilentRegistry(t *testing.T) {
	t.Parallel()
	dir, ref := warmedThenSilent(t)
	stdout, stderr, code := cliBounded(t, "--cache", dir, "--timeout", "200ms", "--json", "resolve", "--platform=linux/amd64", ref)
	if code != exitOK || !strings.Contains(stdout, `"stale"`) || !strings.Contains(stderr, "stale") {
		t.Errorf("resolve of a cached image, silent registry: exit %d, want 0 and stale\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if _, stderr, code := cliBounded(t, "--cache", dir, "--timeout", "200ms", "warm", strings.TrimSuffix(ref, "/app:v1")+"/other:v1"); code != exitNotCached {
		t.Errorf("warm of an uncached image, silent registry: exit %d, want 3\n%s", code, stderr)
	}
}

func TestTimeoutFlagUsage(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"-1s", "soon"} {
		if _, stderr, code := cli(t, "--cache", t.TempDir(), "--timeout", v, "stats"); code != exitUsage {
			t.Errorf("--timeout %s: exit %d, want 2\n%s", v, code, stderr)
		}
	}
	stdout, _, _ := cli(t, "--help")
	if !strings.Contains(stdout, "--timeout") || !strings.Contains(stdout, "not a deadline for the whole command") {
		t.Errorf("--help does not say what --timeout bounds:\n%s", stdout)
	}
}

// A registry that redirects in a loop, or to a file:// URL, answered:
// that is a failure (exit 1), not "offline and not cached" (exit 3).
func TestRefusedRedirectExits1(t *testing.T) {
	t.Parallel()
	for _, loc := range []string{"", "file:///etc/passwd"} {
		srv := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, cmp.Or(loc, r.URL.String()), http.StatusFound)
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		if _, stderr, code := cliBounded(t, "--cache", t.TempDir(), "warm", ln.Addr().String()+"/app:v1"); code != exitFailure || !strings.Contains(stderr, "302") {
			t.Errorf("redirect to %q: exit %d, want 1 with the status\n%s", loc, code, stderr)
		}
	}
}
