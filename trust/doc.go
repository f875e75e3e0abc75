// Package trust provides Policy, a trust policy that says, per
// repository, whether an image must be signed and by whom, and verifies
// its signatures with sigstore's own libraries: cosign's (pkg/cosign) for
// signatures made with a key, sigstore-go's verifier for keyless ones. A
// Policy is a registry.Verifier: a resolver given one
// (registry.WithVerifier) checks every image before it records it as a
// root or serves a cached copy for a reference, and so does a mirror
// serving a tag through that resolver, and buildkit.PinBaseImages
// resolving a Dockerfile's base images. The resolver keeps each image's
// signatures in its store, so verification needs no network: it works
// the same with the registry down.
//
// Only this package links sigstore; the packages that use a policy
// (registry, mirror, buildkit) take it through registry.Verifier.
//
// # Policy file
//
// Load reads YAML or JSON:
//
//	# the mode for repositories no rule matches: require, warn or skip (default skip)
//	default: skip
//	rules:                         # the first rule matching a repository applies
//	  - repositories: ["registry.internal:5000/team/*", "ghcr.io/acme/**"]
//	    mode: require              # require (default), warn or skip
//	    keys: [cosign.pub]         # cosign public keys (cosign generate-key-pair)
//	  - repositories: ["docker.io/library/*"]
//	    mode: warn
//	    keyless:
//	      trustedRoot: trusted_root.json   # Fulcio CAs, Rekor logs, TSAs, CT logs
//	      identities:
//	        - issuer: https://token.actions.githubusercontent.com
//	          subjectRegExp: ^https://github\.com/acme/
//	      ignoreSCT: false         # true accepts certificates with no CT log timestamp
//
// File names are relative to the policy file. A repository is matched by
// its full name, host included, with path.Match patterns per path
// element ("*" within one element) and a final "/**" for any number of
// further elements; Docker Hub is "docker.io" (whatever a client or
// mirror calls it) and its official images are under "docker.io/library/".
// Unknown fields are errors, as is a require or warn rule naming no key
// and no keyless identity.
//
// # Modes
//
//   - require: an image with no signature that verifies is refused: the
//     resolve fails with a *registry.UntrustedError (errors.Is
//     cache.ErrUntrusted) naming the reference, the digest and the
//     reason; it is not recorded as a root, not served for its tag, not
//     pinned.
//   - warn: the same check; an image that fails is admitted, logged and
//     counted (registry's Stats, Untrusted with Refused false).
//   - skip: nothing is fetched or checked.
//
// # What is verified
//
// With keys: cosign's signatures of the image, the layers of its
// "sha256-<hex>.sig" tag (cosign sign --key) and of its OCI 1.1
// signature referrers (cosign sign --registry-referrers-mode=oci-1-1):
// the simple-signing payload must name the image's digest
// (cosign.SimpleClaimVerifier) and the signature must verify with one of
// the keys (cosign.VerifyImageSignature). A transparency-log entry is not
// required (as cosign verify --insecure-ignore-tlog): the point is to
// verify offline, and a key needs no log to be trusted.
//
// Keyless: sigstore bundles attached as referrers (cosign
// --new-bundle-format, and other sigstore clients), verified by
// sigstore-go against the trusted root: the certificate chains to its
// Fulcio CA and was valid when its transparency log (or timestamp
// authority) saw the signature, the log entry's inclusion proof verifies,
// an embedded CT timestamp is present (unless ignoreSCT), the signature
// covers the image's digest, and the certificate names one of the
// identities. Everything needed is in the bundle and the trusted root:
// no request is made.
//
// # Reasons
//
// A refusal's reason is one of registry's: unsigned (nothing found),
// bad_signature (malformed, naming another image's digest, or a bundle
// that does not verify against the trusted root), wrong_key (well
// formed, names the image, verifies with none of the keys: signed with
// another key, or altered so that it still parses — nothing in a
// signature tells the two apart), identity_mismatch (a keyless signature
// that verifies but by another identity), unavailable (the registry could
// not be asked and nothing is stored).
//
// # Not covered
//
// Notation (notaryproject) signatures, cosign's legacy keyless
// signatures (a ".sig" layer carrying a certificate rather than a
// bundle), attestation contents (an SBOM or provenance is kept and
// served, not judged), and key-based sigstore bundles are not verified:
// an image carrying only those is unsigned to this policy.
package trust
