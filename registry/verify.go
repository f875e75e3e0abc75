package registry

// A trust policy (package trust) decides, through the Verifier
// interface, whether an image may be admitted: before a resolve records
// it as a root, and before a cached copy is served for a reference. The
// resolver gathers the image's signatures into the store first
// (signatures.go) and hands the verifier a view of what is stored, so a
// verification reads no network, and works with the registry down.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// VerifyMode is what a trust policy asks of a repository's images.
type VerifyMode int

const (
	// VerifySkip: no signature is fetched or checked.
	VerifySkip VerifyMode = iota
	// VerifyWarn: signatures are checked; an image that fails is
	// admitted, logged and counted (Stats' Untrusted, refused false).
	VerifyWarn
	// VerifyRequire: an image that fails is refused with an
	// *UntrustedError: not recorded, not served for its reference.
	VerifyRequire
)

func (m VerifyMode) String() string {
	switch m {
	case VerifySkip:
		return "skip"
	case VerifyWarn:
		return "warn"
	case VerifyRequire:
		return "require"
	}
	return fmt.Sprintf("VerifyMode(%d)", int(m))
}

// Why an image failed verification: the Reason of a SignatureError, an
// UntrustedError and the reason label of the resolver's Untrusted counts.
const (
	// ReasonUnsigned: no signature of the image was found.
	ReasonUnsigned = "unsigned"
	// ReasonWrongKey: signatures were found, well formed and naming the
	// image, but none verifies with a key the policy trusts: signed with
	// another key, or altered in a way that keeps them well formed (a
	// signature alone cannot tell the two apart).
	ReasonWrongKey = "wrong_key"
	// ReasonBadSignature: a signature was found that is not a valid one
	// for this image: malformed, signing another digest (copied from
	// another image), or a bundle whose certificate, transparency-log
	// entry or timestamp does not verify against the trusted root.
	ReasonBadSignature = "bad_signature"
	// ReasonIdentityMismatch: a keyless signature verifies against the
	// trusted root, but its certificate names an identity (subject,
	// issuer) the policy does not accept.
	ReasonIdentityMismatch = "identity_mismatch"
	// ReasonUnavailable: the signatures could not be fetched (the
	// registry failed) and none are stored.
	ReasonUnavailable = "unavailable"
)

// SignatureError is a Verifier's answer for an image that fails: one of
// the Reason constants and what was found.
type SignatureError struct {
	Reason string
	Detail string
}

func (e *SignatureError) Error() string {
	if e.Detail == "" {
		return e.Reason
	}
	return e.Reason + ": " + e.Detail
}

// UntrustedError is a resolve refused by the trust policy: it names the
// reference, the digest and why. It satisfies errors.Is(err,
// cache.ErrUntrusted).
type UntrustedError struct {
	Ref    string  // as the resolve named it
	Digest v1.Hash // the image refused
	Rule   string  // the policy's rule, as the Verifier names it
	Reason string  // one of the Reason constants
	Detail string
	Err    error // the cause, when the signatures could not be fetched; may be nil
}

func (e *UntrustedError) Error() string {
	s := fmt.Sprintf("%s@%s refused by the trust policy (%s): %s", e.Ref, e.Digest, e.Rule, e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns cache.ErrUntrusted and the cause, if any.
func (e *UntrustedError) Unwrap() []error {
	if e.Err != nil {
		return []error{cache.ErrUntrusted, e.Err}
	}
	return []error{cache.ErrUntrusted}
}

// Rule is what a Verifier's policy says of a repository.
type Rule struct {
	Mode VerifyMode
	// Name names the rule in messages and explanations ("ghcr.io/acme/*").
	Name string
	// ArtifactTypes are the referrers' artifact types that carry the
	// signatures it verifies (sigstore bundles, cosign's OCI 1.1
	// signatures); the resolver gathers those, and cosign's
	// "sha256-<hex>.sig" tag, before Verify.
	ArtifactTypes []string
}

// Verifier is a trust policy (trust.Policy). It is given the signatures
// the store holds and reads nothing else: the resolver fetched them
// first, or the registry is down and what was stored is all there is.
type Verifier interface {
	// Rule is what the policy asks of the images of repo, a
	// repository's full name ("index.docker.io/library/alpine",
	// "127.0.0.1:5000/team/app").
	Rule(repo string) Rule
	// Verify checks image d of repo against sigs. It returns who signed
	// (as the policy names the key or identity), or an error: a
	// *SignatureError saying why the image fails, or another error when
	// it could not be checked.
	Verify(ctx context.Context, repo string, d v1.Hash, sigs Signatures) (signer string, err error)
}

// WithVerifier checks every image a resolve admits against v (default:
// none, every image is admitted). See Verifier, and package trust for a
// policy loaded from a file. An image whose repository's rule is
// VerifySkip costs nothing; otherwise its signatures are kept in the
// store with it (as WithReferrers keeps them) and verified, from the
// store: when it is pulled, right after its top manifest and before any
// of its blobs is downloaded or its root recorded (its signatures then
// fetched afresh: one request for cosign's .sig tag and one for its
// referrers); and each time a cached copy is served for a reference (a
// hit, a revalidation, a stale copy), from the signatures stored, the
// registry asked only when none are, or, when those fail, once a minute
// (signatureRecheck) while it answers.
// For ResolveTop (a mirror serving a tag), a tag that is one of cosign's
// for a signature ("sha256-<hex>.sig", ".att", ".sbom") or the referrers
// tag schema's ("sha256-<hex>") names a signature, not an image, and is
// not checked, so that clients verifying signatures through the mirror
// can fetch them; Resolve (builds, warm) checks every tag.
func WithVerifier(v Verifier) Option {
	return func(o *options) error {
		if v == nil {
			return errors.New("registry: WithVerifier(nil)")
		}
		o.verifier = v
		return nil
	}
}

// verifyCounts are the resolver's verification counters.
type verifyCounts struct {
	mu        sync.Mutex
	verified  uint64
	untrusted map[cache.UntrustedKey]uint64
}

func (c *verifyCounts) add(reason string, refused bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if reason == "" {
		c.verified++
		return
	}
	if c.untrusted == nil {
		c.untrusted = map[cache.UntrustedKey]uint64{}
	}
	c.untrusted[cache.UntrustedKey{Reason: reason, Refused: refused}]++
}

func (c *verifyCounts) snapshot(s *cache.ResolverStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.Verified = c.verified
	if len(c.untrusted) > 0 {
		s.Untrusted = make(map[cache.UntrustedKey]uint64, len(c.untrusted))
		for k, v := range c.untrusted {
			s.Untrusted[k] = v
		}
	}
}

// How admit may ask the registry for an image's signatures.
type sigFetch int

const (
	sigStored  sigFetch = iota // only what is stored counts: the registry is failing or not to be asked
	sigMissing                 // a cached image: ask when none are stored, or once signatureRecheck has passed since those that fail were
	sigFresh                   // an image being pulled: ask, the registry is being asked anyway
)

// admit checks image d, which ref names, against the verifier, if any,
// asking the registry for its signatures as fetch allows. It returns nil
// for an admitted image, having noted in ctx's tally what was found, and
// an *UntrustedError or the registry's error otherwise.
func (r *Resolver) admit(ctx context.Context, ref name.Reference, d v1.Hash, fetch sigFetch) error {
	v := r.o.verifier
	if v == nil || (isSignatureTag(ref) && servesSignatures(ctx)) {
		return nil
	}
	repo := ref.Context()
	rule := v.Rule(repo.Name())
	if rule.Mode == VerifySkip {
		return nil
	}
	want, suffixes := r.signatureWants(rule.ArtifactTypes)
	var fetchErr error
	fetched := false
	if fetch == sigFresh || (fetch == sigMissing && !r.signaturesStored(ctx, repo, d)) {
		fetchErr, fetched = r.keepSignatures(ctx, repo, d, want, suffixes), true
	}
	signer, err := v.Verify(ctx, repo.Name(), d, r.storedSignatures(repo, d))
	if err != nil && fetch == sigMissing && !fetched && r.signaturesOld(ctx, repo, d) {
		// What is stored fails: the registry may hold newer signatures.
		if fetchErr = r.keepSignatures(ctx, repo, d, want, suffixes); fetchErr == nil {
			signer, err = v.Verify(ctx, repo.Name(), d, r.storedSignatures(repo, d))
		}
	}
	if err == nil {
		r.verifyStats.add("", false)
		tallyOf(ctx).setTrust(fmt.Sprintf("verified: %s (rule %s)", signer, rule.Name))
		return nil
	}
	ue := &UntrustedError{Ref: ref.String(), Digest: d, Rule: rule.Name}
	var se *SignatureError
	switch {
	case errors.As(err, &se) && se.Reason == ReasonUnsigned && fetchErr != nil:
		ue.Reason, ue.Detail, ue.Err = ReasonUnavailable, "the signatures could not be fetched and none are stored: "+fetchErr.Error(), fetchErr
	case errors.As(err, &se):
		ue.Reason, ue.Detail = se.Reason, se.Detail
	default:
		ue.Reason, ue.Detail, ue.Err = ReasonBadSignature, "verification failed: "+err.Error(), err
	}
	refused := rule.Mode == VerifyRequire
	r.verifyStats.add(ue.Reason, refused)
	if refused {
		return ue
	}
	tallyOf(ctx).setTrust(fmt.Sprintf("warned: %s: %s (rule %s, warn only: admitted)", ue.Reason, ue.Detail, rule.Name))
	if l := r.o.logger; l != nil {
		l.Log(ctx, slog.LevelWarn, "trust policy: image admitted unverified (warn)", "ref", ue.Ref, "digest", d.String(),
			"reason", ue.Reason, "detail", ue.Detail, "rule", rule.Name)
	}
	return nil
}

// signaturesServed marks the context of a ResolveTop: a mirror serving a
// tag, which may be a signature's (see WithVerifier).
type signaturesServed struct{}

func servesSignatures(ctx context.Context) bool { return ctx.Value(signaturesServed{}) != nil }

// admitResolved checks a resolve's answer that was not pulled (a pull is
// checked before it downloads anything, and before it records its root):
// a cached copy served for ref. The registry is asked for missing
// signatures only when it was just reachable.
func (r *Resolver) admitResolved(ctx context.Context, ref name.Reference, res *cache.ResolvedImage, networkOK bool) error {
	if r.o.verifier == nil || res.Source == cache.Pulled {
		return nil
	}
	fetch := sigStored
	if networkOK && (res.Source == cache.Hit || res.Source == cache.Revalidated) {
		fetch = sigMissing
	}
	ctx, t := withTally(ctx)
	if err := r.admit(ctx, ref, res.Digest, fetch); err != nil {
		return err
	}
	res.Why.Trust = t.trustNote()
	return nil
}
