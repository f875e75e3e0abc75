package memory_test

import (
	"testing"

	"github.com/buildcache/buildcache/internal/depcheck"
)

// TestResourceDependencies keeps the contract and the memory tier light:
// importing them must not pull in a cloud SDK, Kubernetes or BuildKit.
func TestResourceDependencies(t *testing.T) {
	forbidden := []string{"github.com/aws/", "k8s.io/", "sigs.k8s.io/", "github.com/moby/buildkit", "github.com/sigstore/"}
	for _, pkg := range []string{
		"github.com/buildcache/buildcache/cache",
		"github.com/buildcache/buildcache/memory",
	} {
		depcheck.Forbid(t, pkg, forbidden, nil)
	}
}
