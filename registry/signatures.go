package registry

// An image's signatures, attestations and SBOMs kept in the store with
// it: cosign's tags named after the image's digest ("sha256-<hex>.sig",
// ".att", ".sbom"), and its referrers (referrers.go) with their
// manifests and blobs. Each is recorded as a root marked with its
// subject (cache.AnnotationSubject), so the store's collector keeps it
// while it keeps the image, and Prune drops it with the image's last
// root. A trust policy (verify.go) reads them from the store alone.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

// The suffixes of cosign's tags for what describes an image.
var (
	signatureSuffixes = []string{"sig"}                // what a trust policy verifies
	keptSuffixes      = []string{"sig", "att", "sbom"} // what WithReferrers keeps
)

// signatureRecheck is how long stored signatures that fail verification
// are trusted to be all there is before the registry is asked again: an
// unsigned image under a policy that only warns costs the registry two
// requests per signatureRecheck, not per resolve.
const signatureRecheck = time.Minute

// WithReferrers keeps each resolved image's signatures, attestations
// and SBOMs in the store with it, so that a build or a pod start can
// verify them with the registry down: cosign's "sha256-<hex>.sig",
// ".att" and ".sbom" tags of the image's digest, and its referrers (the
// referrers API, or the referrers tag schema's "sha256-<hex>" tag) of
// the artifactTypes given (none: every type), with their manifests and
// blobs. They are fetched when the image is pulled, and when a cached
// image's registry answers and they are not stored yet; each is one
// request (and one per manifest and blob kept). They are recorded as
// roots kept while the image is (cache.AnnotationSubject). Default: only
// what a trust policy (WithVerifier) needs is kept.
func WithReferrers(artifactTypes ...string) Option {
	return func(o *options) error {
		o.keepReferrers = true
		o.referrerTypes = slices.Clone(artifactTypes)
		return nil
	}
}

// keepWith keeps res's signatures and referrers when WithReferrers asks
// for them and the registry may be asked.
func (r *Resolver) keepWith(ctx context.Context, ref name.Reference, res *cache.ResolvedImage, networkOK bool) error {
	if !r.o.keepReferrers || !networkOK || isSignatureTag(ref) {
		return nil
	}
	switch res.Source {
	case cache.Pulled:
	case cache.Hit, cache.Revalidated:
		if r.signaturesStored(ctx, ref.Context(), res.Digest) {
			return nil
		}
	default: // Stale, Reserved: the registry is not to be asked
		return nil
	}
	want, suffixes := r.signatureWants(nil)
	if err := r.keepSignatures(ctx, ref.Context(), res.Digest, want, suffixes); err != nil {
		return fmt.Errorf("registry: %s: keeping its signatures and referrers: %w", ref, err)
	}
	return nil
}

// signatureWants says which referrers (by artifact type) and which of
// cosign's tags to keep for an image: those a trust policy's rule reads
// (ruleTypes and ".sig"), and those WithReferrers asks for.
func (r *Resolver) signatureWants(ruleTypes []string) (want func(artifactType string) bool, suffixes []string) {
	suffixes = signatureSuffixes
	if r.o.keepReferrers {
		suffixes = keptSuffixes
	}
	return func(at string) bool {
		if r.o.keepReferrers && (len(r.o.referrerTypes) == 0 || slices.Contains(r.o.referrerTypes, at)) {
			return true
		}
		return slices.Contains(ruleTypes, at)
	}, suffixes
}

// signatureTagRE matches the tags that name what describes an image
// rather than an image: the referrers tag schema's "sha256-<hex>", and
// cosign's "sha256-<hex>.sig" and the like.
var signatureTagRE = regexp.MustCompile(`^(sha256-[0-9a-f]{64}|sha512-[0-9a-f]{64})(\.[a-z0-9]+)?$`)

// isSignatureTag reports whether ref's tag names a signature, an
// attestation or a referrers list rather than an image.
func isSignatureTag(ref name.Reference) bool {
	t, ok := ref.(name.Tag)
	return ok && signatureTagRE.MatchString(t.TagStr())
}

// subjectOfTag is the digest a root's name ("host/repo:sha256-<hex>.sig")
// describes, when its tag is a signature's.
func subjectOfTag(refName string) (v1.Hash, bool) {
	i := strings.LastIndexByte(refName, ':')
	if i < 0 || strings.Contains(refName[i:], "/") || strings.Contains(refName, "@") {
		return v1.Hash{}, false
	}
	m := signatureTagRE.FindStringSubmatch(refName[i+1:])
	if m == nil || strings.HasPrefix(m[1], "sha512-") {
		return v1.Hash{}, false // a sha512 subject's tag holds only half its digest
	}
	h, err := v1.NewHash(strings.Replace(m[1], "-", ":", 1))
	return h, err == nil
}

// referrersTag is the referrers tag schema's tag for d: "<alg>-<hex>",
// the algorithm cut to 32 characters and the hex to 64.
func referrersTag(d v1.Hash) string {
	alg, hex := d.Algorithm, d.Hex
	if len(alg) > 32 {
		alg = alg[:32]
	}
	if len(hex) > 64 {
		hex = hex[:64]
	}
	return alg + "-" + hex
}

// signatureTag is cosign's tag for d with suffix ("sig"), or the
// referrers tag schema's for "".
func signatureTag(d v1.Hash, suffix string) string {
	if suffix == "" {
		return referrersTag(d)
	}
	return referrersTag(d) + "." + suffix
}

// signaturesStored reports whether subject's referrers were kept (and so
// its cosign tags looked for: keepSignatures records the list last).
func (r *Resolver) signaturesStored(ctx context.Context, repo name.Repository, subject v1.Hash) bool {
	rec, err := r.lookup(ctx, repo.Tag(referrersTag(subject)).Name())
	return err == nil && rec != nil
}

// signaturesOld reports whether subject's kept signatures were fetched
// more than signatureRecheck ago.
func (r *Resolver) signaturesOld(ctx context.Context, repo name.Repository, subject v1.Hash) bool {
	rec, err := r.lookup(ctx, repo.Tag(referrersTag(subject)).Name())
	return err == nil && rec != nil && r.o.now().Sub(rec.lastChecked()) >= signatureRecheck
}

// keepSignatures fetches into the store what describes subject in repo:
// cosign's tags with suffixes, and the referrers whose artifact type
// want accepts, each recorded as a root kept with subject. A tag the
// registry does not have is skipped. The referrers list is recorded
// last, so that signaturesStored means all of it was looked for.
func (r *Resolver) keepSignatures(ctx context.Context, repo name.Repository, subject v1.Hash, want func(artifactType string) bool, suffixes []string) error {
	ctx, release, err := r.lease(ctx)
	if err != nil {
		return err
	}
	defer release()
	for _, suffix := range suffixes {
		if err := r.keepTagged(ctx, repo, signatureTag(subject, suffix)); err != nil {
			return err
		}
	}
	list, err := r.referrers(ctx, repo, subject, 0)
	if err != nil {
		return err
	}
	for _, d := range list.Index.Manifests {
		if !want(d.ArtifactType) {
			continue
		}
		if err := r.keepManifest(ctx, repo, d); err != nil {
			return err
		}
	}
	return r.syncBlobs(ctx)
}

// keepTagged stores the manifest repo's tag names, with its blobs, and
// records the tag; a tag the registry does not have is no error.
func (r *Resolver) keepTagged(ctx context.Context, repo name.Repository, tag string) error {
	desc, raw, err := r.getManifest(ctx, repo, tag)
	var re *regclient.RemoteError
	if errors.As(err, &re) && re.Status == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	if err := r.keepBlobsOf(ctx, repo, desc, raw); err != nil {
		return err
	}
	if err := r.syncBlobs(ctx); err != nil {
		return err
	}
	return r.remember(ctx, repo.Tag(tag).Name(), desc)
}

// keepManifest stores referrer d with its blobs.
func (r *Resolver) keepManifest(ctx context.Context, repo name.Repository, d v1.Descriptor) error {
	raw, err := r.fetchManifest(ctx, repo, d, false)
	if err != nil {
		return err
	}
	return r.keepBlobsOf(ctx, repo, d, raw)
}

// keepBlobsOf downloads what manifest raw (d) lists that the store lacks,
// bounded by the sizes it gives, and then stores raw. An index's
// children are not followed: a referrer that is an index is kept as a
// list.
func (r *Resolver) keepBlobsOf(ctx context.Context, repo name.Repository, d v1.Descriptor, raw []byte) error {
	if !d.MediaType.IsIndex() {
		m, err := v1.ParseManifest(strings.NewReader(string(raw)))
		if err != nil {
			return fmt.Errorf("registry: %s@%s is not a manifest: %w", repo, d.Digest, err)
		}
		blobs := slices.Clone(m.Layers)
		if m.Config.Digest != (v1.Hash{}) {
			if err := checkBlobSize("config", m.Config, maxConfigBytes); err != nil {
				return fmt.Errorf("registry: %s: %w", repo, err)
			}
			blobs = append(blobs, m.Config)
		}
		for _, b := range blobs {
			if err := checkBlobSize("blob", b, maxBlobBytes); err != nil {
				return fmt.Errorf("registry: %s: %w", repo, err)
			}
			if err := r.fetchBlob(ctx, repo, b, false, nil); err != nil {
				return err
			}
		}
	}
	return r.putBytes(ctx, d.Digest, raw)
}

// Signatures is what the store holds of an image's signatures, as a
// Verifier reads them. Nothing it returns came from the network during
// the call: the resolver fetched it before, or it is what was kept.
type Signatures interface {
	// Tag returns the manifest that cosign's tag for the image with
	// suffix ("sig", "att", "sbom") names, and whether one is stored.
	Tag(ctx context.Context, suffix string) (desc v1.Descriptor, raw []byte, ok bool, err error)
	// Referrers lists the image's referrers as stored (none when none
	// are known).
	Referrers(ctx context.Context) ([]v1.Descriptor, error)
	// Manifest returns a stored manifest, at most 4 MiB; Blob a stored
	// blob of at most limit bytes. Missing content wraps
	// cache.ErrNotFound.
	Manifest(ctx context.Context, d v1.Hash) ([]byte, error)
	Blob(ctx context.Context, d v1.Hash, limit int64) ([]byte, error)
}

// storedSignatures is Signatures over the resolver's store.
func (r *Resolver) storedSignatures(repo name.Repository, subject v1.Hash) Signatures {
	return &storeSignatures{r: r, repo: repo, subject: subject}
}

type storeSignatures struct {
	r       *Resolver
	repo    name.Repository
	subject v1.Hash
}

func (s *storeSignatures) Tag(ctx context.Context, suffix string) (v1.Descriptor, []byte, bool, error) {
	d, ok, err := s.r.root(ctx, s.repo.Tag(signatureTag(s.subject, suffix)).Name())
	if err != nil || !ok {
		return v1.Descriptor{}, nil, false, err
	}
	raw, err := s.r.readBlob(ctx, d.Digest, cache.MaxManifestBytes)
	if errors.Is(err, cache.ErrNotFound) {
		return v1.Descriptor{}, nil, false, nil
	}
	return d, raw, err == nil, err
}

func (s *storeSignatures) Referrers(ctx context.Context) ([]v1.Descriptor, error) {
	d, ok, err := s.r.root(ctx, s.repo.Tag(referrersTag(s.subject)).Name())
	if err != nil || !ok {
		return nil, err
	}
	raw, err := s.r.readBlob(ctx, d.Digest, cache.MaxManifestBytes)
	if errors.Is(err, cache.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	list, err := parseReferrers(raw)
	if err != nil {
		return nil, err
	}
	return list.Index.Manifests, nil
}

func (s *storeSignatures) Manifest(ctx context.Context, d v1.Hash) ([]byte, error) {
	return s.r.readBlob(ctx, d, cache.MaxManifestBytes)
}

func (s *storeSignatures) Blob(ctx context.Context, d v1.Hash, limit int64) ([]byte, error) {
	return s.r.readBlob(ctx, d, limit)
}
