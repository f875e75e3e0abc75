package mirror_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testsign"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/trust"
)

// trustedMirror serves a mirror of upstreamHost whose resolver verifies
// against a policy requiring a signature by the key written in dir.
func trustedMirror(t *testing.T, upstreamHost, dir string) (*mirror.Mirror, string) {
	t.Helper()
	policy := fmt.Sprintf("rules:\n  - repositories: [%q]\n    keys: [cosign.pub]\n", upstreamHost+"/**")
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := trust.Load(filepath.Join(dir, "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	res, err := registry.NewResolver(store, registry.WithVerifier(p))
	if err != nil {
		t.Fatal(err)
	}
	m, err := mirror.New(res, mirror.WithUpstream(upstreamHost))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, strings.TrimPrefix(srv.URL, "http://")
}

// TestTrustPolicyDeniesTag: a tag whose image is not signed by the
// policy's key is answered 403 DENIED naming the digest and the reason,
// and counted; a signed one is served. (By digest, content is served
// unverified, as the policy applies to what a tag names.)
func TestTrustPolicyDeniesTag(t *testing.T) {
	up := newUpstream(t)
	dir := t.TempDir()
	key := testsign.NewKey(t)
	key.WritePublic(t, dir, "cosign.pub")
	ti := testimage.ForTest(t)
	repo := up.host() + "/app"
	signed := ti.Push(repo+":signed", ti.RandomIndex(platforms, 256, 1))
	key.Sign(t, repo, signed)
	unsigned := ti.Push(repo+":unsigned", ti.RandomIndex(platforms, 256, 1))
	m, host := trustedMirror(t, up.host(), dir)

	get := func(ref string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/app/manifests/"+ref, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		if len(body.Errors) > 0 {
			return resp.StatusCode, body.Errors[0].Code + ": " + body.Errors[0].Message
		}
		return resp.StatusCode, ""
	}
	if status, msg := get("signed"); status != http.StatusOK {
		t.Fatalf("signed: %d %s", status, msg)
	}
	status, msg := get("unsigned")
	if status != http.StatusForbidden || !strings.HasPrefix(msg, "DENIED: ") || !strings.Contains(msg, unsigned.String()) || !strings.Contains(msg, "unsigned") {
		t.Fatalf("unsigned: %d %q; want 403 DENIED naming %s and the reason", status, msg, unsigned)
	}
	if n := m.Stats().FailedResponses[mirror.ReasonUntrusted]; n != 1 {
		t.Errorf("failed responses %v; want 1 untrusted", m.Stats().FailedResponses)
	}
}
