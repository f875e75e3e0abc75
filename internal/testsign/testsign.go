// Package testsign signs images in a registry for tests, in process, as
// cosign and sigstore clients do: cosign's ".sig" tag with a key
// (Key.Sign), and sigstore bundles attached as referrers, signed by a
// virtual sigstore (sigstore-go's pkg/testing/ca: a Fulcio CA, a Rekor
// log with inclusion proofs, a timestamp authority) whose trusted root it
// writes (Keyless). Integration tests use the real cosign binary; these
// helpers let unit tests cover every case without it.
package testsign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/buildcache/buildcache/internal/testimage"
)

// Key is a cosign key pair, ECDSA P-256 as cosign generate-key-pair
// makes.
type Key struct {
	signer signature.SignerVerifier
	pub    crypto.PublicKey
}

// NewKey generates a key pair.
func NewKey(t testing.TB) *Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{signer: sv, pub: priv.Public()}
}

// WritePublic writes the public key as PEM (cosign.pub) into dir, under
// file, and returns its path.
func (k *Key) WritePublic(t testing.TB, dir, file string) string {
	t.Helper()
	b, err := cryptoutils.MarshalPublicKeyToPEM(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Payload is cosign's simple-signing payload naming image d of repo.
func Payload(t testing.TB, repo string, d v1.Hash) []byte {
	t.Helper()
	ref, err := name.NewDigest(repo + "@" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := (&payload.Cosign{Image: ref}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SignPayload signs p, base64 as cosign's annotation holds it.
func (k *Key) SignPayload(t testing.TB, p []byte) string {
	t.Helper()
	sig, err := k.signer.SignMessage(bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// Sign signs image d of repo ("host/name") and pushes the signature as
// cosign sign --key does: a manifest at tag "sha256-<hex>.sig" whose
// layer is the payload, the signature in its annotation.
func (k *Key) Sign(t testing.TB, repo string, d v1.Hash) {
	t.Helper()
	p := Payload(t, repo, d)
	PushSignature(t, repo, d, p, k.SignPayload(t, p))
}

// PushSignature pushes payload p with signature b64sig (which need not
// match it) as image d's cosign ".sig" tag.
func PushSignature(t testing.TB, repo string, d v1.Hash, p []byte, b64sig string) {
	t.Helper()
	testimage.ForTest(t).PushArtifact(repo+":sha256-"+d.Hex+".sig", "application/vnd.dev.cosign.simplesigning.v1+json", p,
		map[string]string{"dev.cosignproject.cosign/signature": b64sig})
}

// Keyless is a virtual sigstore: a Fulcio CA, a Rekor log and a
// timestamp authority of its own (sigstore-go's ca.VirtualSigstore).
type Keyless struct {
	vs *ca.VirtualSigstore
}

// NewKeyless starts a virtual sigstore.
func NewKeyless(t testing.TB) *Keyless {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	return &Keyless{vs: vs}
}

// WriteTrustedRoot writes the virtual sigstore's trusted_root.json into
// dir and returns its path. The virtual sigstore names each log by its
// hex key ID in its map, but gives the ID's text as the ID's bytes: here
// each log's ID is the raw key ID, as a trusted root from sigstore's TUF
// repository has it, so that log entries find their log.
func (k *Keyless) WriteTrustedRoot(t testing.TB, dir string) string {
	t.Helper()
	raw := func(m map[string]*root.TransparencyLog) map[string]*root.TransparencyLog {
		out := map[string]*root.TransparencyLog{}
		for id, tl := range m {
			b, err := hex.DecodeString(id)
			if err != nil {
				t.Fatal(err)
			}
			c := *tl
			c.ID = b
			out[id] = &c
		}
		return out
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, k.vs.FulcioCertificateAuthorities(), raw(k.vs.CTLogs()),
		k.vs.TimestampingAuthorities(), raw(k.vs.RekorLogs()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "trusted_root.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// BundleArtifactType is the artifact type of a bundle referrer.
const BundleArtifactType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// Bundle signs an in-toto statement whose subject is image d of repo
// (predicate type cosign's for a signature) as identity (a certificate's
// email SAN) with issuer, logged with an inclusion proof and timestamped,
// and returns the sigstore bundle (v0.3) as JSON.
func (k *Keyless) Bundle(t testing.TB, repo string, d v1.Hash, identity, issuer string) []byte {
	t.Helper()
	stmt, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []map[string]any{{"name": repo, "digest": map[string]string{d.Algorithm: d.Hex}}},
		"predicateType": "https://sigstore.dev/cosign/sign/v1",
		"predicate":     map[string]any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The virtual sigstore's certificates are valid from now for 10
	// minutes; its log saw the signature 5 minutes in, as its Attest does.
	ent, err := k.vs.AttestAtTime(identity, issuer, stmt, time.Now().Add(5*time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		t.Fatal(err)
	}
	env := sc.EnvelopeContent().RawEnvelope()
	pl, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	pe := &protodsse.Envelope{Payload: pl, PayloadType: env.PayloadType}
	for _, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			t.Fatal(err)
		}
		pe.Signatures = append(pe.Signatures, &protodsse.Signature{Sig: sig, Keyid: s.KeyID})
	}
	tsrs, err := ent.Timestamps()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ent.TlogEntries()
	if err != nil {
		t.Fatal(err)
	}
	vm := &protobundle.VerificationMaterial{
		Content: &protobundle.VerificationMaterial_Certificate{
			Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
		TimestampVerificationData: &protobundle.TimestampVerificationData{},
	}
	for _, ts := range tsrs {
		vm.TimestampVerificationData.Rfc3161Timestamps = append(vm.TimestampVerificationData.Rfc3161Timestamps,
			&protocommon.RFC3161SignedTimestamp{SignedTimestamp: ts})
	}
	for _, e := range entries {
		tle := e.TransparencyLogEntry()
		tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
		vm.TlogEntries = append(vm.TlogEntries, tle)
	}
	b, err := bundle.NewBundle(&protobundle.Bundle{MediaType: BundleArtifactType, VerificationMaterial: vm,
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: pe}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Attach pushes content (a bundle's JSON) as a referrer of image d of
// repo with artifactType, as cosign --new-bundle-format attaches a bundle
// (testimage.Attach), and returns the referrer's digest.
func Attach(t testing.TB, repo string, d v1.Hash, artifactType string, content []byte) v1.Hash {
	t.Helper()
	return testimage.ForTest(t).Attach(repo, d, artifactType, content, nil)
}
