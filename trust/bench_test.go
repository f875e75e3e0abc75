package trust_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testsign"
	"github.com/buildcache/buildcache/registry"
)

// BenchmarkVerifyPerPull measures what a trust policy adds to a pull that
// the cache answers: a resolve of a cached image with no request
// (if-not-present; a mirror's tag within --max-age costs the same), with
// no policy, with a key policy (cosign's .sig read from the store and
// verified with pkg/cosign) and with a keyless one (a sigstore bundle
// referrer verified with sigstore-go: chain, log inclusion proof,
// timestamp, identity). The difference from "none" is the cost of one
// verification; a revalidating pull adds one HEAD to each.
//
//	go test -run '^$' -bench BenchmarkVerifyPerPull -benchmem ./trust/
func BenchmarkVerifyPerPull(b *testing.B) {
	up := newUpstream(b, true)
	dir := b.TempDir()
	key := testsign.NewKey(b)
	key.WritePublic(b, dir, "cosign.pub")
	ks := testsign.NewKeyless(b)
	ks.WriteTrustedRoot(b, dir)
	repo := up.host() + "/app"
	keyed := up.push(b, "app", "key")
	key.Sign(b, repo, keyed)
	keyless := up.push(b, "app", "keyless")
	testsign.Attach(b, repo, keyless, testsign.BundleArtifactType, ks.Bundle(b, repo, keyless, "builder@example.com", "https://issuer.example"))
	p := writePolicy(b, dir, fmt.Sprintf(`rules:
  - repositories: [%q]
    keys: [cosign.pub]
    keyless:
      trustedRoot: trusted_root.json
      identities: [{issuer: https://issuer.example, subject: builder@example.com}]
      ignoreSCT: true
`, repo))
	for _, c := range []struct {
		name, tag string
		v         registry.Verifier
	}{{"none", "key", nil}, {"key", "key", p}, {"keyless", "keyless", p}} {
		b.Run(c.name, func(b *testing.B) {
			res, _ := newResolver(b, c.v)
			ctx := context.Background()
			ref := repo + ":" + c.tag
			if _, err := res.Resolve(ctx, ref); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				img, err := res.Resolve(ctx, ref, cache.WithPolicy(cache.PullIfNotPresent))
				if err != nil || img.Source != cache.Hit {
					b.Fatalf("%v, %v", img, err)
				}
			}
		})
	}
}
