package trust_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/buildcache/buildcache/buildkit"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testsign"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/trust"
)

var platforms = []string{"linux/amd64", "linux/arm64"}

// The identity the virtual sigstore signs keyless bundles as.
const keylessIssuer, keylessIdentity = "https://issuer.example", "builder@example.com"

// signedImages is what TestCosignRealParts signs with the real cosign in
// a real docker-registry.
type signedImages struct {
	repo string
	// signed: cosign sign --key (the .sig tag) and an SPDX SBOM
	// attestation (cosign attest --type spdxjson, the .att tag);
	// referred: signed in OCI 1.1 mode (a referrer, in the referrers tag
	// schema of a registry without the API); moving: signed, and its tag
	// moves to an unsigned image later; keyless: a sigstore bundle of the
	// virtual sigstore, by the identity the policy names, as a referrer.
	signed, referred, moving, keyless v1.Hash
	// refused, with the reason the policy gives.
	refused map[string]refusal
}

type refusal struct {
	d      v1.Hash
	reason string
}

func signImages(t *testing.T, cs *cosignCLI, ks *testsign.Keyless, host string) *signedImages {
	t.Helper()
	ti := testimage.ForTest(t)
	s := &signedImages{repo: host + "/base", refused: map[string]refusal{}}
	push := func(tag string) v1.Hash { return ti.Push(s.repo+":"+tag, ti.RandomIndex(platforms, 1024, 1)) }
	s.signed = push("signed")
	cs.sign(t, "trusted", s.repo, s.signed, false)
	cs.attestSBOM(t, "trusted", s.repo, s.signed)
	s.referred = push("referred")
	cs.sign(t, "trusted", s.repo, s.referred, true)
	s.moving = push("moving")
	cs.sign(t, "trusted", s.repo, s.moving, false)

	s.refused["unsigned"] = refusal{push("unsigned"), registry.ReasonUnsigned}
	foreign := push("foreign")
	cs.sign(t, "other", s.repo, foreign, false)
	s.refused["foreign"] = refusal{foreign, registry.ReasonWrongKey}
	copied := push("copied")
	copySignature(t, s.repo, s.signed, copied)
	s.refused["copied"] = refusal{copied, registry.ReasonBadSignature}
	if ks != nil {
		s.keyless = push("keyless")
		testsign.Attach(t, s.repo, s.keyless, testsign.BundleArtifactType, ks.Bundle(t, s.repo, s.keyless, keylessIdentity, keylessIssuer))
		impostor := push("impostor")
		testsign.Attach(t, s.repo, impostor, testsign.BundleArtifactType, ks.Bundle(t, s.repo, impostor, "mallory@example.com", keylessIssuer))
		s.refused["impostor"] = refusal{impostor, registry.ReasonIdentityMismatch}
	}
	tampered := push("tampered")
	cs.sign(t, "trusted", s.repo, tampered, false)
	corruptSignature(t, s.repo, tampered)
	s.refused["tampered"] = refusal{tampered, registry.ReasonBadSignature}
	return s
}

// moveTag points :moving at a fresh unsigned image and returns it.
func (s *signedImages) moveTag(t *testing.T) v1.Hash {
	t.Helper()
	ti := testimage.ForTest(t)
	return ti.Push(s.repo+":moving", ti.RandomIndex(platforms, 1024, 1))
}

// verifier is what reads the policy: a resolver over a fresh store, with
// the mirror in front of another resolver over another store.
type verifier struct {
	store     *localfs.Store
	res       *registry.Resolver
	mirror    string       // host:port of a mirror of the registry with the same policy
	referrers atomic.Int64 // requests to the mirror's referrers endpoint
}

func newVerifier(t *testing.T, p *trust.Policy, upstreamHost string) *verifier {
	t.Helper()
	v := &verifier{}
	v.res, v.store = newResolver(t, p, registry.WithDefaultPlatforms(platforms...))
	mres, _ := newResolver(t, p, registry.WithReferrers())
	m, err := mirror.New(mres, mirror.WithUpstream(upstreamHost))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/referrers/") {
			v.referrers.Add(1)
		}
		m.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	v.mirror = strings.TrimPrefix(srv.URL, "http://")
	return v
}

// pullThroughMirror pulls tag's index and every platform image through
// the mirror, as a daemon configured with it would.
func (v *verifier) pullThroughMirror(tag string) error {
	ref, err := name.NewTag(v.mirror + "/base:" + tag)
	if err != nil {
		return err
	}
	idx, err := remote.Index(ref)
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		if _, err := img.Layers(); err != nil {
			return err
		}
	}
	return nil
}

// pin pins a Dockerfile FROM image:tag for a build.
func (v *verifier) pin(repo, tag string) error {
	df := fmt.Sprintf("FROM %s:%s\nRUN true\n", repo, tag)
	_, err := buildkit.PinBaseImages(context.Background(), []byte(df), v.res, v.store, buildkit.WithPlatforms(platforms...))
	return err
}

// TestCosignRealParts: images signed by the real cosign (built from the
// module proxy) in a real docker-registry, checked by a require policy
// with the trusted key through the resolver, the mirror (a pull as a
// daemon makes it, and cosign verify and verify-attestation through it:
// the .sig and .att tags and the referrers endpoint), and
// buildkit.PinBaseImages: the signed image passes; unsigned, signed with
// another key, a signature copied from another image, a corrupted
// signature, and a tag moved to an unsigned image are refused; with the
// registry stopped, all of it still works from the caches. The same
// policy's keyless rule admits a sigstore bundle (from sigstore-go's
// virtual sigstore) by its identity and refuses one by another.
func TestCosignRealParts(t *testing.T) {
	cs := newCosign(t, "trusted", "other")
	ks := testsign.NewKeyless(t)
	reg := startRegistry(t)
	imgs := signImages(t, cs, ks, reg.Host)
	ks.WriteTrustedRoot(t, cs.keys["trusted"])
	p := writePolicy(t, cs.keys["trusted"], fmt.Sprintf(`rules:
  - repositories: [%q]
    mode: require
    keys: [cosign.pub]
    keyless:
      trustedRoot: trusted_root.json
      identities: [{issuer: %q, subject: %q}]
      ignoreSCT: true  # the virtual Fulcio embeds no CT timestamp
`, reg.Host+"/**", keylessIssuer, keylessIdentity))
	v := newVerifier(t, p, reg.Host)
	ctx := context.Background()

	for _, tag := range []string{"signed", "referred", "moving", "keyless"} {
		if _, err := v.res.Resolve(ctx, imgs.repo+":"+tag); err != nil {
			t.Errorf("resolve %s: %v", tag, err)
		}
		if err := v.pullThroughMirror(tag); err != nil {
			t.Errorf("pull %s through the mirror: %v", tag, err)
		}
		if err := v.pin(imgs.repo, tag); err != nil {
			t.Errorf("pin %s: %v", tag, err)
		}
	}
	for tag, want := range imgs.refused {
		_, err := v.res.Resolve(ctx, imgs.repo+":"+tag)
		wantRefused(t, "resolve "+tag, err, want.d, want.reason)
		wantDenied(t, "pull "+tag+" through the mirror", v.pullThroughMirror(tag))
		wantRefused(t, "pin "+tag, v.pin(imgs.repo, tag), want.d, want.reason)
	}

	// cosign itself verifies through the mirror: the .sig tag, the
	// referrer (cosign --experimental-oci11 lists it with the referrers
	// endpoint), and the SBOM attestation (.att).
	cosignThroughMirror := func(when string) {
		t.Helper()
		for _, c := range []struct {
			what string
			d    v1.Hash
			args []string
		}{
			{"signature (.sig)", imgs.signed, nil},
			{"signature (referrer)", imgs.referred, []string{"--experimental-oci11"}},
			{"SBOM attestation (.att)", imgs.signed, []string{"attestation", "--type", "spdxjson"}},
		} {
			if out, err := cs.verify("trusted", v.mirror+"/base@"+c.d.String(), c.args...); err != nil {
				t.Errorf("%s: cosign verify of the %s through the mirror: %v\n%s", when, c.what, err, out)
			}
		}
	}
	cosignThroughMirror("registry up")
	if v.referrers.Load() == 0 {
		t.Error("cosign verify --experimental-oci11 did not ask the mirror's referrers endpoint")
	}

	moved := imgs.moveTag(t)
	_, err := v.res.Resolve(ctx, imgs.repo+":moving")
	wantRefused(t, "resolve the moved tag", err, moved, registry.ReasonUnsigned)
	wantDenied(t, "pull the moved tag through the mirror", v.pullThroughMirror("moving"))
	wantRefused(t, "pin the moved tag", v.pin(imgs.repo, "moving"), moved, registry.ReasonUnsigned)
	if root, ok, _ := v.store.Root(ctx, imgs.repo+":moving"); !ok || root.Digest != imgs.moving {
		t.Errorf("after the move, the root of :moving is %v; want the signed %s still", root.Digest, imgs.moving)
	}

	reg.Stop()
	for _, tag := range []string{"signed", "referred", "keyless"} {
		img, err := v.res.Resolve(ctx, imgs.repo+":"+tag)
		if err != nil || img.Source != cache.Stale || !strings.HasPrefix(img.Why.Trust, "verified") {
			t.Errorf("registry stopped: resolve %s: %+v, %v; want stale and verified", tag, img, err)
		}
		if err := v.pullThroughMirror(tag); err != nil {
			t.Errorf("registry stopped: pull %s through the mirror: %v", tag, err)
		}
		if err := v.pin(imgs.repo, tag); err != nil {
			t.Errorf("registry stopped: pin %s: %v", tag, err)
		}
	}
	cosignThroughMirror("registry stopped")
	if _, err := v.res.Resolve(ctx, imgs.repo+":unsigned"); err == nil {
		t.Error("registry stopped: the unsigned image resolved")
	}
}

// wantDenied checks a pull through the mirror was refused 403 DENIED.
func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusForbidden || len(te.Errors) == 0 || te.Errors[0].Code != transport.DeniedErrorCode {
		t.Errorf("%s: %v; want 403 DENIED", what, err)
	}
}
