package trust

import (
	"context"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/registry"
)

// Verify implements registry.Verifier: image d of repo passes when one
// of its signatures in sigs verifies as repo's rule asks, by one of its
// keys or, keyless, by one of its identities under its trusted root. It
// returns who signed, or a *registry.SignatureError saying why no
// signature passed: of every signature found, the most telling failure
// (identity mismatch, then bad signature, then wrong key; unsigned when
// none was found).
func (p *Policy) Verify(ctx context.Context, repo string, d v1.Hash, sigs registry.Signatures) (string, error) {
	r := p.match(repo)
	switch {
	case r == nil && p.def != registry.VerifySkip:
		return "", &registry.SignatureError{Reason: registry.ReasonUnsigned,
			Detail: "no rule names a key or identity to trust for this repository, and the default is " + p.def.String()}
	case r == nil || r.mode == registry.VerifySkip:
		return "no rule asks for a signature", nil
	}
	var fails []*registry.SignatureError
	if len(r.keys) > 0 {
		ss, err := cosignSignatures(ctx, sigs)
		if err != nil {
			return "", err
		}
		signer, why := verifyWithKeys(ctx, d, ss, r.keys)
		if why == nil {
			return signer, nil
		}
		fails = append(fails, why)
	}
	if r.keyless != nil {
		bs, bad, err := bundles(ctx, sigs)
		if err != nil {
			return "", err
		}
		signer, why := verifyKeyless(d, bs, bad, r.keyless)
		if why == nil {
			return signer, nil
		}
		fails = append(fails, why)
	}
	return "", worst(fails)
}

// worst is the failure that says the most about an image.
func worst(fails []*registry.SignatureError) error {
	rank := map[string]int{registry.ReasonIdentityMismatch: 4, registry.ReasonBadSignature: 3, registry.ReasonWrongKey: 2, registry.ReasonUnsigned: 1}
	best := fails[0]
	var unsigned []string
	for _, f := range fails {
		if rank[f.Reason] > rank[best.Reason] {
			best = f
		}
		if f.Reason == registry.ReasonUnsigned {
			unsigned = append(unsigned, f.Detail)
		}
	}
	if best.Reason == registry.ReasonUnsigned && len(unsigned) > 1 {
		return &registry.SignatureError{Reason: registry.ReasonUnsigned, Detail: strings.Join(unsigned, ", ")}
	}
	return best
}
