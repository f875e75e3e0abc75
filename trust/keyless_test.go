package trust_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/buildcache/buildcache/internal/testsign"
	"github.com/buildcache/buildcache/registry"
)

// TestKeylessPolicy verifies sigstore bundles attached as referrers,
// offline, against a trusted root and identities given in the policy:
// the virtual sigstore of sigstore-go's pkg/testing/ca (a Fulcio CA, a
// Rekor log with inclusion proofs, a timestamp authority) signs, its
// trusted_root.json is written for the policy. Both with the registry's
// referrers API and with the referrers tag schema of a registry without
// one.
func TestKeylessPolicy(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrersAPI=%v", api), func(t *testing.T) { testKeyless(t, api) })
	}
}

func testKeyless(t *testing.T, referrersAPI bool) {
	ctx := context.Background()
	up := newUpstream(t, referrersAPI)
	dir := t.TempDir()
	sigstore, rogue := testsign.NewKeyless(t), testsign.NewKeyless(t)
	sigstore.WriteTrustedRoot(t, dir)
	const issuer, who = "https://issuer.example", "builder@example.com"
	p := writePolicy(t, dir, fmt.Sprintf(`rules:
  - repositories: [%q]
    keyless:
      trustedRoot: trusted_root.json
      identities:
        - issuer: %s
          subjectRegExp: ^builder@example\.com$
      ignoreSCT: true   # the virtual Fulcio embeds no CT timestamp
`, up.host()+"/**", issuer))
	res, store := newResolver(t, p)
	repo := up.host() + "/app"

	signed := up.push(t, "app", "signed")
	testsign.Attach(t, repo, signed, testsign.BundleArtifactType, sigstore.Bundle(t, repo, signed, who, issuer))
	img, err := res.Resolve(ctx, repo+":signed")
	if err != nil {
		t.Fatalf("signed: %v", err)
	}
	if !strings.Contains(img.Why.Trust, "identity "+who) {
		t.Errorf("signed: Why.Trust = %q", img.Why.Trust)
	}

	stranger := up.push(t, "app", "stranger")
	testsign.Attach(t, repo, stranger, testsign.BundleArtifactType, sigstore.Bundle(t, repo, stranger, "mallory@example.com", issuer))
	_, err = res.Resolve(ctx, repo+":stranger")
	refused(t, store, repo+":stranger", stranger, err, registry.ReasonIdentityMismatch)

	untrustedRoot := up.push(t, "app", "rogue")
	testsign.Attach(t, repo, untrustedRoot, testsign.BundleArtifactType, rogue.Bundle(t, repo, untrustedRoot, who, issuer))
	_, err = res.Resolve(ctx, repo+":rogue")
	refused(t, store, repo+":rogue", untrustedRoot, err, registry.ReasonBadSignature)

	copied := up.push(t, "app", "copied") // a bundle of another image
	testsign.Attach(t, repo, copied, testsign.BundleArtifactType, sigstore.Bundle(t, repo, signed, who, issuer))
	_, err = res.Resolve(ctx, repo+":copied")
	refused(t, store, repo+":copied", copied, err, registry.ReasonBadSignature)

	unsigned := up.push(t, "app", "unsigned")
	_, err = res.Resolve(ctx, repo+":unsigned")
	refused(t, store, repo+":unsigned", unsigned, err, registry.ReasonUnsigned)

	up.down.Store(true)
	if img, err := res.Resolve(ctx, repo+":signed"); err != nil || !strings.Contains(img.Why.Trust, "verified") {
		t.Fatalf("registry down: %+v, %v", img, err)
	}
}
