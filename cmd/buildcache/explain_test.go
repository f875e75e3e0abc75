package main

import (
	"strings"
	"testing"

	"github.com/buildcache/buildcache/internal/testimage"
)

func TestResolveExplain(t *testing.T) {
	t.Parallel()
	ti := pushTestImage(t)
	dir := t.TempDir()
	explain := func(want ...string) string {
		t.Helper()
		stdout, stderr, code := cli(t, "--cache", dir, "resolve", "--explain", bothPlatforms, ti.ref)
		if code != 0 {
			t.Fatalf("resolve --explain: exit %d\n%s", code, stderr)
		}
		t.Logf("buildcache resolve --explain:\n%s", stdout)
		for _, w := range want {
			if !strings.Contains(stdout, w) {
				t.Errorf("resolve --explain printed\n%s\nwant it to contain %q", stdout, w)
			}
		}
		return stdout
	}
	d1 := ti.want["digest"].(string)
	explain("  why: not in the cache: pulled\n", "    policy always, max age 0s; never checked\n", "    fetched 9 blobs, ")
	// Warm: one HEAD confirms the cached digest.
	explain(" revalidated\n", "  why: one HEAD: the tag still points to the cached digest\n",
		"    cached "+shortDigest(d1)+", registry "+shortDigest(d1)+"\n", "    fetched 0 blobs, 0 B\n", "; last checked 0s ago (")
	// The tag moves.
	d2 := testimage.ForTest(t).Push(ti.ref, testimage.ForTest(t).RandomIndex([]string{"linux/amd64", "linux/arm64"}, 1024, 2)).String()
	explain(" pulled\n", "  why: the tag moved from "+shortDigest(d1)+" to "+shortDigest(d2)+": pulled what the cache lacked\n",
		"    cached "+shortDigest(d1)+", registry "+shortDigest(d2)+"\n", "    fetched 9 blobs, ")
	// The registry goes away.
	ti.srv.Close()
	explain(" stale\n", "  why: the registry failed: served the cached copy (stale-if-error)\n",
		"    cached "+shortDigest(d2)+", registry (none)\n", "    registry error: registry: HEAD manifest http://", "connection refused")

	// --json carries the same.
	doc := cliJSON(t, 0, "--cache", dir, "resolve", "--explain", "--policy=if-not-present", bothPlatforms, ti.ref)
	why, _ := image(t, doc, 0)["why"].(map[string]any)
	if why["policy"] != "if-not-present" || why["stored_digest"] != d2 || why["reason"] != "policy if-not-present: the cache holds it, no request" || why["fetched_blobs"] != 0.0 {
		t.Errorf("--json why = %v", why)
	}
	if _, ok := image(t, cliJSON(t, 0, "--cache", dir, "resolve", "--policy=never", bothPlatforms, ti.ref), 0)["why"]; ok {
		t.Error("--json without --explain says why")
	}
}
