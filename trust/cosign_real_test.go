package trust_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
)

// cosignVersion is the cosign scripts/test builds from the module proxy.
const cosignVersion = "v2.6.5"

// cosignCLI runs the real cosign binary with key pairs it generated
// (cosign generate-key-pair), each in a directory of its own, with no
// transparency log and plain HTTP to loopback registries.
type cosignCLI struct {
	bin  string
	home string
	keys map[string]string // name -> directory holding cosign.key, cosign.pub
}

func newCosign(t *testing.T, keyNames ...string) *cosignCLI {
	t.Helper()
	c := &cosignCLI{bin: testserver.RequireTool(t, "BUILDCACHE_COSIGN_BIN", "cosign",
		"go install github.com/sigstore/cosign/v2/cmd/cosign@"+cosignVersion), home: t.TempDir(), keys: map[string]string{}}
	for _, k := range keyNames {
		dir := t.TempDir()
		c.run(t, dir, "generate-key-pair")
		c.keys[k] = dir
	}
	return c
}

// run runs cosign in dir and returns its output; a failure fails t.
func (c *cosignCLI) run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := c.try(dir, args...)
	if err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// try runs cosign in dir and returns its output and error.
func (c *cosignCLI) try(dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=test", "HOME="+c.home, "DOCKER_CONFIG="+c.home,
		"COSIGN_EXPERIMENTAL=1", "TUF_ROOT="+filepath.Join(c.home, "tuf"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// sign signs image d of repo with key, as cosign sign --key does: the
// .sig tag, or with oci11 an OCI 1.1 referrer (the referrers tag schema
// on a registry without the API).
func (c *cosignCLI) sign(t *testing.T, key, repo string, d v1.Hash, oci11 bool) {
	t.Helper()
	args := []string{"sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry", "--yes"}
	if oci11 {
		args = append(args, "--registry-referrers-mode=oci-1-1")
	}
	c.run(t, c.keys[key], append(args, repo+"@"+d.String())...)
}

// attestSBOM attaches an SPDX SBOM attestation to image d of repo,
// signed with key (the .att tag).
func (c *cosignCLI) attestSBOM(t *testing.T, key, repo string, d v1.Hash) {
	t.Helper()
	sbom := filepath.Join(c.keys[key], "sbom.spdx.json")
	doc := `{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"base",` +
		`"documentNamespace":"https://example.com/base","creationInfo":{"created":"2026-01-01T00:00:00Z","creators":["Tool: test"]},"packages":[]}`
	if err := os.WriteFile(sbom, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	c.run(t, c.keys[key], "attest", "--key", "cosign.key", "--type", "spdxjson", "--predicate", sbom,
		"--tlog-upload=false", "--allow-insecure-registry", "--yes", repo+"@"+d.String())
}

// verify runs cosign verify (or verify-attestation, with extra args)
// against ref with key's public key.
func (c *cosignCLI) verify(key, ref string, extra ...string) (string, error) {
	cmd := "verify"
	if len(extra) > 0 && extra[0] == "attestation" {
		cmd, extra = "verify-attestation", extra[1:]
	}
	return c.try(c.keys[key], append([]string{cmd, "--key", "cosign.pub", "--insecure-ignore-tlog",
		"--allow-insecure-registry"}, append(extra, ref)...)...)
}

// copySignature makes image to's .sig tag the manifest of from's: a
// valid signature of another image, moved.
func copySignature(t *testing.T, repo string, from, to v1.Hash) {
	t.Helper()
	putSignature(t, repo, to, getSignature(t, repo, from))
}

// corruptSignature rewrites d's .sig so that its signature is no DER at
// all: its first byte (the SEQUENCE tag) changed.
func corruptSignature(t *testing.T, repo string, d v1.Hash) {
	t.Helper()
	raw := getSignature(t, repo, d)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	layer := m["layers"].([]any)[0].(map[string]any)
	ann := layer["annotations"].(map[string]any)
	sig, err := base64.StdEncoding.DecodeString(ann["dev.cosignproject.cosign/signature"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sig[0] ^= 0xff
	ann["dev.cosignproject.cosign/signature"] = base64.StdEncoding.EncodeToString(sig)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	putSignature(t, repo, d, b)
}

func sigTag(t *testing.T, repo string, d v1.Hash) name.Tag {
	t.Helper()
	tag, err := name.NewTag(repo + ":sha256-" + d.Hex + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func getSignature(t *testing.T, repo string, d v1.Hash) []byte {
	t.Helper()
	desc, err := remote.Get(sigTag(t, repo, d))
	if err != nil {
		t.Fatal(err)
	}
	return desc.Manifest
}

func putSignature(t *testing.T, repo string, d v1.Hash, raw []byte) {
	t.Helper()
	if err := remote.Put(sigTag(t, repo, d), rawManifest(raw)); err != nil {
		t.Fatal(err)
	}
}

// rawManifest is an OCI manifest to push as it is.
type rawManifest []byte

func (r rawManifest) RawManifest() ([]byte, error)        { return r, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// wantRefused checks err is the trust policy's refusal of d for reason.
func wantRefused(t *testing.T, what string, err error, d v1.Hash, reason string) {
	t.Helper()
	if !errors.Is(err, cache.ErrUntrusted) || !strings.Contains(fmt.Sprint(err), d.String()) || !strings.Contains(fmt.Sprint(err), reason) {
		t.Errorf("%s: %v; want refused by the trust policy for %s, naming %s", what, err, reason, d)
	}
}

// startRegistry is a real docker-registry (Debian's distribution 2.8:
// no referrers API, so cosign's OCI 1.1 signatures go in the referrers
// tag schema) for cosign to sign images in.
func startRegistry(t *testing.T) *testserver.Registry {
	t.Helper()
	return testserver.StartRegistry(t)
}
