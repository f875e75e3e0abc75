package memory_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestResourceDependencies keeps the contract and the memory tier light:
// importing them must not pull in a cloud SDK, Kubernetes or BuildKit (as
// go-containerregistry's pkg/registry/depcheck_test.go does for its own
// package).
func TestResourceDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies with")
	}
	forbidden := []string{
		"github.com/aws/",
		"k8s.io/",
		"sigs.k8s.io/",
		"github.com/moby/buildkit",
	}
	for _, pkg := range []string{
		"github.com/buildcache/buildcache/cache",
		"github.com/buildcache/buildcache/memory",
	} {
		out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
			}
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for dep := range strings.FieldsSeq(string(out)) {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
