package trust_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testsign"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/trust"
)

// upstream is an in-process registry that can be stopped (503) and
// counts the requests for signatures.
type upstream struct {
	srv       *httptest.Server
	down      atomic.Bool
	sigAsks   atomic.Int64 // requests for a sha256-<hex>… tag or a referrers list
	referrers bool         // serves the referrers API
}

func newUpstream(t testing.TB, referrersAPI bool) *upstream {
	u := &upstream{referrers: referrersAPI}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(referrersAPI))
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if strings.Contains(r.URL.Path, "/manifests/sha256-") || strings.Contains(r.URL.Path, "/referrers/") {
			u.sigAsks.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) host() string { return strings.TrimPrefix(u.srv.URL, "http://") }

// push pushes a fresh one-platform image as repo:tag and returns its digest.
func (u *upstream) push(t testing.TB, repo, tag string) v1.Hash {
	t.Helper()
	ti := testimage.ForTest(t)
	return ti.Push(u.host()+"/"+repo+":"+tag, ti.RandomIndex([]string{"linux/amd64"}, 512, 1))
}

// writePolicy writes a policy file into dir and loads it.
func writePolicy(t testing.TB, dir, yaml string) *trust.Policy {
	t.Helper()
	f := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := trust.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newResolver is a resolver over a fresh localfs store verifying with v
// (nil: none).
func newResolver(t testing.TB, v registry.Verifier, opts ...registry.Option) (*registry.Resolver, *localfs.Store) {
	t.Helper()
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	base := []registry.Option{registry.WithDefaultPlatforms("linux/amd64"), registry.WithStaleBudget(300 * time.Millisecond)}
	if v != nil {
		base = append(base, registry.WithVerifier(v))
	}
	res, err := registry.NewResolver(store, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return res, store
}

// refused checks that err is the policy's refusal for reason, naming ref
// and digest d, and that ref is not recorded as a root.
func refused(t *testing.T, store *localfs.Store, ref string, d v1.Hash, err error, reason string) {
	t.Helper()
	var ue *registry.UntrustedError
	if !errors.As(err, &ue) || !errors.Is(err, cache.ErrUntrusted) {
		t.Fatalf("%s: got %v, want an UntrustedError", ref, err)
	}
	if ue.Reason != reason || ue.Digest != d || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), d.String()) {
		t.Errorf("%s: refused as %q for %s (%v); want %q for %s, both named", ref, ue.Reason, ue.Digest, err, reason, d)
	}
	if root, ok, _ := store.Root(context.Background(), ref); ok && root.Digest == d {
		t.Errorf("%s: the refused %s is recorded as a root", ref, d)
	}
}

// TestKeyPolicy runs a require policy with a cosign key over images signed
// in process as cosign sign --key signs them: signed, unsigned, another
// key, a signature copied from another image, a garbled signature, and a
// tag moved to an unsigned image.
func TestKeyPolicy(t *testing.T) {
	ctx := context.Background()
	up := newUpstream(t, false)
	dir := t.TempDir()
	key, other := testsign.NewKey(t), testsign.NewKey(t)
	key.WritePublic(t, dir, "cosign.pub")
	p := writePolicy(t, dir, fmt.Sprintf("rules:\n  - repositories: [%q]\n    mode: require\n    keys: [cosign.pub]\n", up.host()+"/team/*"))
	res, store := newResolver(t, p)
	repo := up.host() + "/team/app"

	signed := up.push(t, "team/app", "signed")
	key.Sign(t, repo, signed)
	img, err := res.Resolve(ctx, repo+":signed")
	if err != nil {
		t.Fatalf("signed: %v", err)
	}
	if !strings.Contains(img.Why.Trust, "verified: cosign signature, key cosign.pub") {
		t.Errorf("signed: Why.Trust = %q", img.Why.Trust)
	}

	unsigned := up.push(t, "team/app", "unsigned")
	_, err = res.Resolve(ctx, repo+":unsigned")
	refused(t, store, repo+":unsigned", unsigned, err, registry.ReasonUnsigned)

	foreign := up.push(t, "team/app", "foreign")
	other.Sign(t, repo, foreign)
	_, err = res.Resolve(ctx, repo+":foreign")
	refused(t, store, repo+":foreign", foreign, err, registry.ReasonWrongKey)

	copied := up.push(t, "team/app", "copied")
	p1 := testsign.Payload(t, repo, signed) // a valid signature of another image
	testsign.PushSignature(t, repo, copied, p1, key.SignPayload(t, p1))
	_, err = res.Resolve(ctx, repo+":copied")
	refused(t, store, repo+":copied", copied, err, registry.ReasonBadSignature)

	garbled := up.push(t, "team/app", "garbled")
	p2 := testsign.Payload(t, repo, garbled)
	testsign.PushSignature(t, repo, garbled, p2, "bm90IGEgc2lnbmF0dXJl") // base64 of "not a signature"
	_, err = res.Resolve(ctx, repo+":garbled")
	refused(t, store, repo+":garbled", garbled, err, registry.ReasonBadSignature)

	// The tag moves to an unsigned image: refused, and the root still
	// names the signed one.
	ti := testimage.ForTest(t)
	moved := ti.Push(repo+":signed", ti.RandomIndex([]string{"linux/amd64"}, 512, 1))
	_, err = res.Resolve(ctx, repo+":signed")
	refused(t, store, repo+":signed", moved, err, registry.ReasonUnsigned)
	if root, ok, _ := store.Root(ctx, repo+":signed"); !ok || root.Digest != signed {
		t.Errorf("after the refusal the root of :signed is %v, want the signed %s", root.Digest, signed)
	}

	s := res.Stats()
	if s.Verified != 1 || s.Untrusted[cache.UntrustedKey{Reason: registry.ReasonBadSignature, Refused: true}] != 2 ||
		s.Untrusted[cache.UntrustedKey{Reason: registry.ReasonUnsigned, Refused: true}] != 2 ||
		s.Untrusted[cache.UntrustedKey{Reason: registry.ReasonWrongKey, Refused: true}] != 1 {
		t.Errorf("stats: verified %d, untrusted %v", s.Verified, s.Untrusted)
	}
}

// TestVerifiesFromCacheOffline: once a signed image and its signature are
// stored, the registry is not asked for the signature again, and with the
// registry down the image is served stale and still verified, from the
// store; an unsigned image cached before the policy is refused offline.
func TestVerifiesFromCacheOffline(t *testing.T) {
	ctx := context.Background()
	up := newUpstream(t, true)
	dir := t.TempDir()
	key := testsign.NewKey(t)
	key.WritePublic(t, dir, "cosign.pub")
	p := writePolicy(t, dir, fmt.Sprintf("rules:\n  - repositories: [%q]\n    keys: [cosign.pub]\n", up.host()+"/**"))
	repo := up.host() + "/app"
	signed := up.push(t, "app", "v1")
	key.Sign(t, repo, signed)
	res, store := newResolver(t, p)
	if _, err := res.Resolve(ctx, repo+":v1"); err != nil {
		t.Fatal(err)
	}
	asks := up.sigAsks.Load()
	img, err := res.Resolve(ctx, repo+":v1")
	if err != nil || img.Source != cache.Revalidated {
		t.Fatalf("warm: %v, %v", img, err)
	}
	if n := up.sigAsks.Load() - asks; n != 0 {
		t.Errorf("a warm resolve asked the registry %d times for signatures, want 0", n)
	}
	up.down.Store(true)
	img, err = res.Resolve(ctx, repo+":v1")
	if err != nil || img.Source != cache.Stale || !strings.Contains(img.Why.Trust, "verified") {
		t.Fatalf("registry down: %+v, %v; want stale and verified", img, err)
	}

	// An image stored without a policy, unsigned: refused offline.
	up.down.Store(false)
	unsigned := up.push(t, "app", "v2")
	plain, err := registry.NewResolver(store, registry.WithDefaultPlatforms("linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Resolve(ctx, repo+":v2"); err != nil {
		t.Fatal(err)
	}
	up.down.Store(true)
	_, err = res.Resolve(ctx, repo+":v2")
	var ue *registry.UntrustedError
	if !errors.As(err, &ue) || ue.Digest != unsigned || ue.Reason != registry.ReasonUnsigned {
		t.Fatalf("unsigned, registry down: %v; want refused as unsigned", err)
	}
}

// TestWarnAndSkip: warn admits an unsigned image and counts it; skip
// asks the registry for no signature.
func TestWarnAndSkip(t *testing.T) {
	ctx := context.Background()
	up := newUpstream(t, true)
	dir := t.TempDir()
	testsign.NewKey(t).WritePublic(t, dir, "cosign.pub")
	p := writePolicy(t, dir, fmt.Sprintf(`default: require
rules:
  - repositories: [%q]
    mode: warn
    keys: [cosign.pub]
  - repositories: [%q]
    mode: skip
`, up.host()+"/warned", up.host()+"/skipped/**"))
	res, _ := newResolver(t, p)
	up.push(t, "warned", "v1")
	img, err := res.Resolve(ctx, up.host()+"/warned:v1")
	if err != nil || !strings.HasPrefix(img.Why.Trust, "warned: unsigned") {
		t.Fatalf("warn: %+v, %v", img, err)
	}
	if n := res.Stats().Untrusted[cache.UntrustedKey{Reason: registry.ReasonUnsigned}]; n != 1 {
		t.Errorf("warned unsigned counted %d times, want 1", n)
	}
	up.push(t, "skipped/x", "v1")
	asks := up.sigAsks.Load()
	if _, err := res.Resolve(ctx, up.host()+"/skipped/x:v1"); err != nil {
		t.Fatal(err)
	}
	if n := up.sigAsks.Load() - asks; n != 0 {
		t.Errorf("skip asked the registry %d times for signatures", n)
	}
	// No rule: the default requires, and there is no key to verify with.
	up.push(t, "other", "v1")
	if _, err := res.Resolve(ctx, up.host()+"/other:v1"); !errors.Is(err, cache.ErrUntrusted) {
		t.Errorf("default require: %v", err)
	}
}
