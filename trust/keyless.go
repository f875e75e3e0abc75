package trust

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/buildcache/buildcache/registry"
)

// bundleArtifactTypes are the artifact types of the referrers that carry
// a sigstore bundle (cosign sign/attest --new-bundle-format, and every
// sigstore client that attaches bundles to images): one layer, the
// bundle's JSON.
var bundleArtifactTypes = []string{
	"application/vnd.dev.sigstore.bundle.v0.3+json",
	"application/vnd.dev.sigstore.bundle+json;version=0.3",
	"application/vnd.dev.sigstore.bundle+json;version=0.2",
	"application/vnd.dev.sigstore.bundle+json;version=0.1",
}

// maxBundleBytes bounds a bundle read from the store: a certificate
// chain, a log entry with its proof and a timestamp are a few KiB.
const maxBundleBytes = 4 << 20

// bundles reads the sigstore bundles attached to the image as referrers.
func bundles(ctx context.Context, sigs registry.Signatures) ([]*bundle.Bundle, []string, error) {
	refs, err := sigs.Referrers(ctx)
	if err != nil {
		return nil, nil, err
	}
	var out []*bundle.Bundle
	var bad []string
	for _, d := range refs {
		if !isBundleType(d.ArtifactType) {
			continue
		}
		raw, err := sigs.Manifest(ctx, d.Digest)
		if err != nil {
			continue // listed but not kept
		}
		m, err := v1.ParseManifest(strings.NewReader(string(raw)))
		if err != nil || len(m.Layers) != 1 {
			bad = append(bad, fmt.Sprintf("referrer %s is not a bundle's manifest (one layer)", d.Digest))
			continue
		}
		b, err := sigs.Blob(ctx, m.Layers[0].Digest, maxBundleBytes)
		if err != nil {
			return nil, nil, fmt.Errorf("the bundle %s: %w", m.Layers[0].Digest, err)
		}
		var sb bundle.Bundle
		if err := sb.UnmarshalJSON(b); err != nil {
			bad = append(bad, fmt.Sprintf("referrer %s: not a sigstore bundle: %v", d.Digest, err))
			continue
		}
		out = append(out, &sb)
	}
	return out, bad, nil
}

func isBundleType(t string) bool {
	for _, bt := range bundleArtifactTypes {
		if t == bt {
			return true
		}
	}
	return false
}

// verifyKeyless verifies bundles with sigstore-go (verify.Verifier over
// the rule's trusted root): the certificate chains to a Fulcio CA of the
// root and was valid when the transparency log (or a timestamp
// authority) saw the signature, the log entry and its inclusion proof
// verify against the root's log keys, the signature covers the image's
// digest (the message's digest, or a subject of the in-toto statement),
// and the certificate names one of the rule's identities. It returns the
// identity that signed, or why no bundle passed.
func verifyKeyless(d v1.Hash, bs []*bundle.Bundle, bad []string, k *keyless) (string, *registry.SignatureError) {
	digest, err := hex.DecodeString(d.Hex)
	if err != nil {
		return "", &registry.SignatureError{Reason: registry.ReasonBadSignature, Detail: err.Error()}
	}
	opts := make([]verify.PolicyOption, 0, len(k.identities))
	for _, id := range k.identities {
		opts = append(opts, verify.WithCertificateIdentity(id))
	}
	policy := verify.NewPolicy(verify.WithArtifactDigest(d.Algorithm, digest), opts...)
	var mismatched []string
	for _, b := range bs {
		res, err := k.verifier.Verify(b, policy)
		if err == nil {
			who := "sigstore bundle"
			if c := res.Signature.Certificate; c != nil {
				who += fmt.Sprintf(", identity %s (issuer %s)", c.SubjectAlternativeName, c.Issuer)
			}
			return who, nil
		}
		var idErr *verify.ErrNoMatchingCertificateIdentity
		if errors.As(err, &idErr) {
			mismatched = append(mismatched, err.Error())
			continue
		}
		bad = append(bad, "a bundle does not verify: "+err.Error())
	}
	switch {
	case len(mismatched) > 0:
		return "", &registry.SignatureError{Reason: registry.ReasonIdentityMismatch,
			Detail: "a bundle verifies but names none of " + strings.Join(k.names, ", ") + ": " + strings.Join(mismatched, "; ")}
	case len(bad) > 0:
		return "", &registry.SignatureError{Reason: registry.ReasonBadSignature, Detail: strings.Join(bad, "; ")}
	}
	return "", &registry.SignatureError{Reason: registry.ReasonUnsigned, Detail: "no sigstore bundle found"}
}
