package buildkit_test

import (
	"testing"

	"github.com/buildcache/buildcache/internal/depcheck"
)

// TestDependencies: a program that pins base images and runs builds links
// neither the AWS SDK nor our s3 package, and one that makes BuildKit
// cache entries (for any backend, S3 included) links neither the AWS SDK
// nor a registry client: the S3 layout is plain data in s3/s3loc, and the
// entries find what they need by capability, not by concrete type.
func TestDependencies(t *testing.T) {
	const mod = "github.com/buildcache/buildcache/"
	aws := "github.com/aws/"
	// The registry client, and the packages it is being split into.
	registry := []string{mod + "registry", mod + "regclient", mod + "ocirepo"}
	for _, tc := range []struct {
		pkg       string
		forbidden []string // import path prefixes
		exact     []string // import paths
	}{
		{pkg: mod + "buildkit", forbidden: []string{aws}, exact: []string{mod + "s3"}},
		{pkg: mod + "buildkit/cacheentry", forbidden: append([]string{aws}, registry...), exact: []string{mod + "s3"}},
	} {
		depcheck.Forbid(t, tc.pkg, tc.forbidden, tc.exact)
	}
}
