package metrics_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependencies keeps metrics light: it reads the stats value types of
// package cache, so a program that exports metrics links cache and
// Prometheus, and none of the backends whose stats it exports (registry,
// tier, memory, ...), no cloud SDK, no Kubernetes (the Kubernetes
// collectors are in k8smetrics) and no BuildKit.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies with")
	}
	const pkg = "github.com/buildcache/buildcache/metrics"
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	ours := []string{ // the module's packages metrics may link
		pkg,
		"github.com/buildcache/buildcache/cache",
		"github.com/buildcache/buildcache/internal/promfamily",
	}
	forbidden := []string{
		"github.com/aws/",
		"k8s.io/",
		"sigs.k8s.io/",
		"github.com/moby/buildkit",
		"github.com/dgraph-io/ristretto", // memory's
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if strings.HasPrefix(dep, "github.com/buildcache/buildcache/") && !slices.Contains(ours, dep) {
			t.Errorf("metrics depends on %s", dep)
		}
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("metrics depends on %s", dep)
			}
		}
	}
}
