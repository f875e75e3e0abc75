package dockerfile

import (
	"strings"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// ContextName is the name the dockerfile frontend looks a named context up
// by for image ref, exactly as dockerui.Client.NamedContext computes it
// from the normalized name dockerfile2llb passes: the familiar form
// without ":latest" ("alpine", "alpine:3.20", "ghcr.io/o/app",
// "golang@sha256:...").
func ContextName(named reference.Named) string {
	return strings.TrimSuffix(reference.FamiliarString(named), ":latest")
}

// ContextKey is the frontend attribute that names ref's context for one
// platform: "context:<name>::<os>/<arch>[/<variant>]". The frontend tries
// this key first, then "context:<name>".
func ContextKey(named reference.Named, p ocispecs.Platform) string {
	return "context:" + ContextName(named) + "::" + platforms.FormatAll(platforms.Normalize(p))
}

// StageContextName is the name the frontend looks a stage's own named
// context up by: a context with this name replaces the whole stage.
func StageContextName(stage string) (string, bool) {
	named, err := reference.ParseNormalizedNamed(stage)
	if err != nil {
		return "", false
	}
	return ContextName(named), true
}
