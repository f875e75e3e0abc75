package trust

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"sigs.k8s.io/yaml"

	"github.com/buildcache/buildcache/registry"
)

// Policy is a trust policy: per repository, whether images must be
// signed, and by whom. It implements registry.Verifier; give it to a
// resolver with registry.WithVerifier. A Policy is immutable and safe for
// concurrent use.
type Policy struct {
	def   registry.VerifyMode // for repositories no rule matches
	rules []*rule
}

var _ registry.Verifier = (*Policy)(nil)

// rule is one of a policy's rules, checked.
type rule struct {
	name     string   // its patterns, as messages name the rule
	patterns []string // normalised (normalizeRepo)
	mode     registry.VerifyMode
	keys     []publicKey
	keyless  *keyless
}

// publicKey is a cosign public key a rule trusts.
type publicKey struct {
	name     string // the file it was read from, as the policy gave it
	verifier signature.Verifier
	pub      crypto.PublicKey
}

// keyless is what a rule trusts of keyless signatures: a trusted root
// (Fulcio CAs, Rekor logs, timestamp authorities, CT logs) and the
// identities a certificate may name.
type keyless struct {
	verifier   *verify.Verifier
	identities []verify.CertificateIdentity
	names      []string // the identities, for messages
}

// The file format (YAML or JSON; see the package doc).
type policyFile struct {
	Default string     `json:"default"`
	Rules   []ruleFile `json:"rules"`
}

type ruleFile struct {
	Repositories []string     `json:"repositories"`
	Mode         string       `json:"mode"`
	Keys         []string     `json:"keys"`
	Keyless      *keylessFile `json:"keyless"`
}

type keylessFile struct {
	TrustedRoot string         `json:"trustedRoot"`
	Identities  []identityFile `json:"identities"`
	// IgnoreSCT accepts certificates without a signed certificate
	// timestamp from a CT log (default false: one is required, as Fulcio
	// embeds one in every certificate).
	IgnoreSCT bool `json:"ignoreSCT"`
}

type identityFile struct {
	Issuer        string `json:"issuer"`
	IssuerRegExp  string `json:"issuerRegExp"`
	Subject       string `json:"subject"`
	SubjectRegExp string `json:"subjectRegExp"`
}

// Load reads a policy from a YAML or JSON file. File names in it (keys,
// trusted roots) are relative to the file's directory.
func Load(file string) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	p, err := Parse(b, filepath.Dir(file))
	if err != nil {
		return nil, fmt.Errorf("trust: %s: %w", file, err)
	}
	return p, nil
}

// Parse reads a policy from YAML or JSON; relative file names in it are
// relative to dir. Unknown fields are errors, as is a rule that requires
// or warns without saying whose signatures it trusts.
func Parse(data []byte, dir string) (*Policy, error) {
	var f policyFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, err
	}
	def, err := parseMode(f.Default, registry.VerifySkip)
	if err != nil {
		return nil, fmt.Errorf("default: %w", err)
	}
	p := &Policy{def: def}
	for i, rf := range f.Rules {
		r, err := parseRule(rf, dir)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func parseMode(s string, def registry.VerifyMode) (registry.VerifyMode, error) {
	switch s {
	case "":
		return def, nil
	case "skip":
		return registry.VerifySkip, nil
	case "warn":
		return registry.VerifyWarn, nil
	case "require":
		return registry.VerifyRequire, nil
	}
	return 0, fmt.Errorf("mode %q: want require, warn or skip", s)
}

func parseRule(rf ruleFile, dir string) (*rule, error) {
	if len(rf.Repositories) == 0 {
		return nil, errors.New("no repositories")
	}
	mode, err := parseMode(rf.Mode, registry.VerifyRequire)
	if err != nil {
		return nil, err
	}
	r := &rule{name: strings.Join(rf.Repositories, ","), mode: mode}
	for _, pat := range rf.Repositories {
		norm, err := normalizePattern(pat)
		if err != nil {
			return nil, err
		}
		r.patterns = append(r.patterns, norm)
	}
	if mode == registry.VerifySkip {
		if len(rf.Keys) > 0 || rf.Keyless != nil {
			return nil, errors.New("mode skip takes no keys and no keyless")
		}
		return r, nil
	}
	if len(rf.Keys) == 0 && rf.Keyless == nil {
		return nil, fmt.Errorf("mode %s needs keys or keyless: whose signatures does it trust?", rf.Mode)
	}
	for _, k := range rf.Keys {
		pk, err := loadKey(resolvePath(dir, k))
		if err != nil {
			return nil, err
		}
		pk.name = k
		r.keys = append(r.keys, pk)
	}
	if rf.Keyless != nil {
		if r.keyless, err = parseKeyless(rf.Keyless, dir); err != nil {
			return nil, fmt.Errorf("keyless: %w", err)
		}
	}
	return r, nil
}

func resolvePath(dir, file string) string {
	if filepath.IsAbs(file) || dir == "" {
		return file
	}
	return filepath.Join(dir, file)
}

// loadKey reads a PEM public key, as cosign generate-key-pair writes
// cosign.pub.
func loadKey(file string) (publicKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return publicKey{}, fmt.Errorf("key: %w", err)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return publicKey{}, fmt.Errorf("key %s: %w", file, err)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return publicKey{}, fmt.Errorf("key %s: %w", file, err)
	}
	return publicKey{verifier: v, pub: pub}, nil
}

func parseKeyless(kf *keylessFile, dir string) (*keyless, error) {
	if kf.TrustedRoot == "" {
		return nil, errors.New("trustedRoot: a trusted_root.json file is needed (sigstore's, from its TUF repository, or your own)")
	}
	if len(kf.Identities) == 0 {
		return nil, errors.New("identities: at least one is needed: a certificate of anyone the trusted root certifies would do otherwise")
	}
	tr, err := root.NewTrustedRootFromPath(resolvePath(dir, kf.TrustedRoot))
	if err != nil {
		return nil, fmt.Errorf("trustedRoot %s: %w", kf.TrustedRoot, err)
	}
	// Offline: the certificate's validity is checked at the time the
	// transparency log or a timestamp authority observed the signature.
	opts := []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1)}
	if !kf.IgnoreSCT {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	v, err := verify.NewVerifier(tr, opts...)
	if err != nil {
		return nil, err
	}
	k := &keyless{verifier: v}
	for _, id := range kf.Identities {
		ci, err := verify.NewShortCertificateIdentity(id.Issuer, id.IssuerRegExp, id.Subject, id.SubjectRegExp)
		if err != nil {
			return nil, fmt.Errorf("identity %+v: %w", id, err)
		}
		k.identities = append(k.identities, ci)
		k.names = append(k.names, strings.TrimSpace(fmt.Sprintf("%s %s (issuer %s%s)", id.Subject, id.SubjectRegExp, id.Issuer, id.IssuerRegExp)))
	}
	return k, nil
}

// Rule implements registry.Verifier: the first rule with a pattern that
// matches repo, else the policy's default.
func (p *Policy) Rule(repo string) registry.Rule {
	r := p.match(repo)
	if r == nil {
		return registry.Rule{Mode: p.def, Name: "default"}
	}
	return registry.Rule{Mode: r.mode, Name: r.name, ArtifactTypes: r.artifactTypes()}
}

func (p *Policy) match(repo string) *rule {
	norm := normalizeRepo(repo)
	for _, r := range p.rules {
		for _, pat := range r.patterns {
			if matchPattern(pat, norm) {
				return r
			}
		}
	}
	return nil
}

// artifactTypes are the referrers that carry the signatures r reads.
func (r *rule) artifactTypes() []string {
	var ts []string
	if len(r.keys) > 0 {
		ts = append(ts, cosignSignatureArtifactType)
	}
	if r.keyless != nil {
		ts = append(ts, bundleArtifactTypes...)
	}
	return ts
}

// normalizeRepo is a repository's name as patterns match it: the host
// and path, Docker Hub as "docker.io" (whatever the client or mirror
// called it: index.docker.io, registry-1.docker.io) and its official
// images under "library/".
func normalizeRepo(repo string) string {
	r, err := name.NewRepository(repo)
	if err != nil {
		return repo
	}
	host := r.RegistryStr()
	switch host {
	case name.DefaultRegistry, "docker.io", "registry-1.docker.io":
		host = "docker.io"
		if !strings.Contains(r.RepositoryStr(), "/") {
			return host + "/library/" + r.RepositoryStr()
		}
	}
	return host + "/" + r.RepositoryStr()
}

// normalizePattern checks a pattern and names Docker Hub as
// normalizeRepo does.
func normalizePattern(pat string) (string, error) {
	host, rest, ok := strings.Cut(pat, "/")
	if !ok || host == "" || rest == "" {
		return "", fmt.Errorf("repository pattern %q: want host/path (docker.io/library/alpine, ghcr.io/acme/*, registry:5000/**)", pat)
	}
	if _, err := path.Match(pat, ""); err != nil {
		return "", fmt.Errorf("repository pattern %q: %w", pat, err)
	}
	if i := strings.Index(pat, "**"); i >= 0 && (i != len(pat)-2 || (i > 0 && pat[i-1] != '/')) {
		return "", fmt.Errorf("repository pattern %q: ** may only end a pattern, as its last path element", pat)
	}
	switch host {
	case name.DefaultRegistry, "registry-1.docker.io":
		host = "docker.io"
	}
	return host + "/" + rest, nil
}

// matchPattern matches a normalised repository against a pattern: path
// elements as path.Match matches them (* within one element), and a
// final /** any number of further elements.
func matchPattern(pat, repo string) bool {
	if prefix, ok := strings.CutSuffix(pat, "/**"); ok {
		for p := repo; ; {
			if ok, _ := path.Match(prefix, p); ok && p != repo {
				return true
			}
			i := strings.LastIndexByte(p, '/')
			if i < 0 {
				return false
			}
			p = p[:i]
		}
	}
	ok, _ := path.Match(pat, repo)
	return ok
}
