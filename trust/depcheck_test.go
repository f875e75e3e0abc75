package trust_test

import (
	"testing"

	"github.com/buildcache/buildcache/internal/depcheck"
)

// TestSigstoreStaysHere: only this package links sigstore (cosign,
// sigstore-go and their dependencies: Rekor, Fulcio, TUF clients). The
// resolver, the mirror and BuildKit's pinning take a policy through
// registry.Verifier, so a program that does not verify signatures does
// not carry them; cache, memory and metrics check it in their own
// dependency tests.
func TestSigstoreStaysHere(t *testing.T) {
	const mod = "github.com/buildcache/buildcache/"
	for _, pkg := range []string{mod + "registry", mod + "regclient", mod + "mirror", mod + "buildkit", mod + "localfs"} {
		depcheck.Forbid(t, pkg, []string{"github.com/sigstore/", "github.com/theupdateframework/"}, []string{mod + "trust"})
	}
}
