package metrics_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesDependency: a program that exports layer cache and
// resolver metrics does not link client-go; the Kubernetes collectors are
// in k8smetrics.
func TestNoKubernetesDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/buildcache/buildcache/metrics").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, "github.com/buildcache/buildcache/k8sclient") {
			t.Errorf("metrics depends on %s", dep)
		}
	}
}
