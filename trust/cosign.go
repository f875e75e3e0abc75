package trust

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ocisig "github.com/sigstore/cosign/v2/pkg/oci/signature"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/buildcache/buildcache/registry"
)

// cosignSignatureArtifactType is the artifact type of the referrer
// cosign writes for a signature in OCI 1.1 mode (cosign sign
// --registry-referrers-mode=oci-1-1): the same manifest as its ".sig"
// tag's, attached by subject.
const cosignSignatureArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"

// maxPayloadBytes bounds a cosign signature's payload read from the
// store: a simple-signing payload is a few hundred bytes.
const maxPayloadBytes = 1 << 20

// cosignSignatures reads the signatures cosign attached to the image:
// the layers of its ".sig" tag's manifest and of its OCI 1.1 signature
// referrers, each an oci.Signature as cosign's own registry code builds
// it (pkg/oci/signature.New over the layer's bytes and descriptor).
func cosignSignatures(ctx context.Context, sigs registry.Signatures) ([]oci.Signature, error) {
	var manifests [][]byte
	_, raw, ok, err := sigs.Tag(ctx, "sig")
	if err != nil {
		return nil, err
	}
	if ok {
		manifests = append(manifests, raw)
	}
	refs, err := sigs.Referrers(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range refs {
		if d.ArtifactType != cosignSignatureArtifactType {
			continue
		}
		raw, err := sigs.Manifest(ctx, d.Digest)
		if err != nil {
			continue // listed but not kept: not this policy's to read
		}
		manifests = append(manifests, raw)
	}
	var out []oci.Signature
	for _, raw := range manifests {
		m, err := v1.ParseManifest(strings.NewReader(string(raw)))
		if err != nil {
			return nil, &registry.SignatureError{Reason: registry.ReasonBadSignature, Detail: "a cosign signature manifest does not parse: " + err.Error()}
		}
		for _, l := range m.Layers {
			payload, err := sigs.Blob(ctx, l.Digest, maxPayloadBytes)
			if err != nil {
				return nil, fmt.Errorf("the payload %s of a cosign signature: %w", l.Digest, err)
			}
			out = append(out, ocisig.New(static.NewLayer(payload, types.MediaType(l.MediaType)), l))
		}
	}
	return out, nil
}

// verifyWithKeys verifies sigs with cosign (pkg/cosign's
// VerifyImageSignature and SimpleClaimVerifier, as cosign verify --key
// --insecure-ignore-tlog does) against each key. It returns the key that
// verified one, or why none did.
func verifyWithKeys(ctx context.Context, d v1.Hash, sigs []oci.Signature, keys []publicKey) (string, *registry.SignatureError) {
	var bad, wrong []string
	for _, sig := range sigs {
		// Which image a signature names is checked first, so that a
		// signature copied from another image is told apart from a
		// foreign key.
		if err := cosign.SimpleClaimVerifier(sig, d, nil); err != nil {
			bad = append(bad, "a signature names another image: "+err.Error())
			continue
		}
		if why := malformed(sig, keys); why != "" {
			bad = append(bad, why)
			continue
		}
		for _, k := range keys {
			co := &cosign.CheckOpts{SigVerifier: k.verifier, ClaimVerifier: cosign.SimpleClaimVerifier, IgnoreTlog: true, IgnoreSCT: true, Offline: true}
			if _, err := cosign.VerifyImageSignature(ctx, sig, d, co); err == nil {
				return "cosign signature, key " + k.name, nil
			}
		}
		wrong = append(wrong, "a signature does not verify with "+keyNames(keys))
	}
	switch {
	case len(bad) > 0:
		return "", &registry.SignatureError{Reason: registry.ReasonBadSignature, Detail: strings.Join(bad, "; ")}
	case len(wrong) > 0:
		return "", &registry.SignatureError{Reason: registry.ReasonWrongKey, Detail: strings.Join(wrong, "; ")}
	}
	return "", &registry.SignatureError{Reason: registry.ReasonUnsigned, Detail: "no cosign signature found"}
}

// malformed says why sig cannot be a signature at all (not base64; for
// ECDSA keys, not the DER sequence of two integers every ECDSA signature
// is), or "". A well-formed signature that does not verify may be one by
// another key, or altered: nothing in it tells which.
func malformed(sig oci.Signature, keys []publicKey) string {
	b64, err := sig.Base64Signature()
	if err != nil {
		return "a signature cannot be read: " + err.Error()
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "a signature is not base64: " + err.Error()
	}
	for _, k := range keys {
		if _, ok := k.pub.(*ecdsa.PublicKey); !ok {
			return ""
		}
	}
	var r, s cryptobyte.String
	in := cryptobyte.String(raw)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, asn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1(&r, asn1.INTEGER) || !seq.ReadASN1(&s, asn1.INTEGER) || !seq.Empty() {
		return "a signature is not an ECDSA signature (DER)"
	}
	return ""
}

func keyNames(keys []publicKey) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	if len(names) == 1 {
		return "the key " + names[0]
	}
	return "any of the keys " + strings.Join(names, ", ")
}
