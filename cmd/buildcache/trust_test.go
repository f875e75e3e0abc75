package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/internal/testsign"
)

// TestTrustPolicyFlag: resolve --trust-policy refuses an unsigned image
// with exit 6, and --explain says why; the image signed by the policy's
// key resolves, its trust line explained; warm --with-signatures keeps
// its signature; a policy that does not load is a usage error.
func TestTrustPolicyFlag(t *testing.T) {
	ti := pushTestImage(t)
	dir := t.TempDir()
	key := testsign.NewKey(t)
	key.WritePublic(t, dir, "cosign.pub")
	host := strings.TrimPrefix(ti.srv.URL, "http://")
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("rules:\n  - repositories: [\""+host+"/**\"]\n    keys: [cosign.pub]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()

	stdout, stderr, code := cli(t, "--cache", cacheDir, "resolve", "--trust-policy", policy, "--explain", ti.ref)
	if code != exitUntrusted || !strings.Contains(stderr, "refused by the trust policy") || !strings.Contains(stdout, "trust: unsigned") {
		t.Fatalf("unsigned: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	ref, _ := name.ParseReference(ti.ref)
	desc, err := remote.Head(ref)
	if err != nil {
		t.Fatal(err)
	}
	key.Sign(t, host+"/app", desc.Digest)
	stdout, stderr, code = cli(t, "--cache", cacheDir, "warm", "--trust-policy", policy, "--with-signatures", "--explain", ti.ref)
	if code != exitOK || !strings.Contains(stdout, "trust: verified: cosign signature, key cosign.pub") {
		t.Fatalf("signed: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	stdout, _, _ = cli(t, "--cache", cacheDir, "ls")
	if !strings.Contains(stdout, ".sig") {
		t.Errorf("ls after warm --with-signatures lists no .sig:\n%s", stdout)
	}

	if _, stderr, code := cli(t, "--cache", cacheDir, "resolve", "--trust-policy", filepath.Join(dir, "missing.yaml"), ti.ref); code != exitUsage {
		t.Errorf("a missing policy: exit %d, want %d: %s", code, exitUsage, stderr)
	}
}
