package metrics_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/buildcache/buildcache/internal/depcheck"
)

// TestDependencies keeps metrics light: it reads the stats value types of
// package cache, so a program that exports metrics links cache and
// Prometheus, and none of the backends whose stats it exports (registry,
// tier, memory, ...), no cloud SDK, no Kubernetes (the Kubernetes
// collectors are in k8smetrics) and no BuildKit.
func TestDependencies(t *testing.T) {
	const mod = "github.com/buildcache/buildcache/"
	const pkg = mod + "metrics"
	ours := []string{pkg, mod + "cache", mod + "internal/promfamily"} // the module's packages metrics may link
	for _, dep := range depcheck.Deps(t, pkg) {
		if strings.HasPrefix(dep, mod) && !slices.Contains(ours, dep) {
			t.Errorf("metrics depends on %s", dep)
		}
	}
	depcheck.Forbid(t, pkg, []string{
		"github.com/aws/", "k8s.io/", "sigs.k8s.io/", "github.com/moby/buildkit", "github.com/sigstore/",
		"github.com/dgraph-io/ristretto", // memory's
	}, nil)
}
