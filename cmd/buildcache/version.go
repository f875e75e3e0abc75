package main

import (
	"runtime/debug"
	"strings"
)

// version is set at link time by builds that know it (the container
// image: deploy/image passes -ldflags "-X main.version=v1.2.3"). Empty, it
// is taken from the build information: the module's version for
// `go install …@v1.2.3`, else "(devel)", with the VCS revision when the
// build recorded one.
var version string

// buildVersion is what `buildcache --version` prints after the name.
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && !strings.Contains(v, rev[:min(12, len(rev))]) {
		v += " " + rev[:min(12, len(rev))]
		if modified == "true" {
			v += "-dirty"
		}
	}
	return v
}
