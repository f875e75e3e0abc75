package trust_test

import (
	"strings"
	"testing"

	"github.com/buildcache/buildcache/internal/testsign"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/trust"
)

// TestRuleMatching: the first rule with a matching pattern applies,
// Docker Hub under any of its names; * stays within a path element, a
// final /** takes any number; no match is the default.
func TestRuleMatching(t *testing.T) {
	dir := t.TempDir()
	testsign.NewKey(t).WritePublic(t, dir, "k.pub")
	p, err := trust.Parse([]byte(`
default: warn
rules:
  - repositories: [docker.io/library/*]
    mode: skip
  - repositories: [index.docker.io/acme/*, "ghcr.io/acme/**"]
    keys: [k.pub]
  - repositories: ["registry:5000/team/*/app"]
    mode: warn
    keys: [k.pub]
`), dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		repo string
		mode registry.VerifyMode
		rule string
	}{
		{"index.docker.io/library/alpine", registry.VerifySkip, "docker.io/library/*"},
		{"registry-1.docker.io/library/golang", registry.VerifySkip, "docker.io/library/*"},
		{"docker.io/acme/base", registry.VerifyRequire, "index.docker.io/acme/*,ghcr.io/acme/**"},
		{"ghcr.io/acme/x/y/z", registry.VerifyRequire, "index.docker.io/acme/*,ghcr.io/acme/**"},
		{"ghcr.io/acme", registry.VerifyWarn, "default"},
		{"registry:5000/team/a/app", registry.VerifyWarn, "registry:5000/team/*/app"},
		{"registry:5000/team/a/b/app", registry.VerifyWarn, "default"},
		{"quay.io/other", registry.VerifyWarn, "default"},
	} {
		r := p.Rule(c.repo)
		if r.Mode != c.mode || r.Name != c.rule {
			t.Errorf("Rule(%s) = %v by %q, want %v by %q", c.repo, r.Mode, r.Name, c.mode, c.rule)
		}
	}
}

// TestParseRefuses: what a policy file may not say.
func TestParseRefuses(t *testing.T) {
	dir := t.TempDir()
	testsign.NewKey(t).WritePublic(t, dir, "k.pub")
	for _, c := range []struct{ policy, want string }{
		{"rules: [{repositories: [a.io/x], mode: require}]", "needs keys or keyless"},
		{"rules: [{repositories: [a.io/x], mode: skip, keys: [k.pub]}]", "skip takes no keys"},
		{"rules: [{repositories: [a.io/x], mode: maybe, keys: [k.pub]}]", `mode "maybe"`},
		{"rules: [{repositories: [alpine], keys: [k.pub]}]", "want host/path"},
		{"rules: [{repositories: [a.io/**/x], keys: [k.pub]}]", "** may only end a pattern"},
		{"rules: [{repositories: [a.io/x], keys: [missing.pub]}]", "missing.pub"},
		{"rules: [{repositories: [a.io/x], keyless: {trustedRoot: r.json}}]", "identities"},
		{"rules: [{repositories: [a.io/x], keys: [k.pub], unknown: 1}]", "unknown"},
		{"default: never", `mode "never"`},
	} {
		_, err := trust.Parse([]byte(c.policy), dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%s): %v; want an error saying %q", c.policy, err, c.want)
		}
	}
}
