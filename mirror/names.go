package mirror

import (
	"regexp"
	"strings"
)

// The distribution spec's grammar for repository names and tags.
var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxNameLen bounds a repository name, as distribution does (255 with the
// registry host; the name alone is checked here).
const maxNameLen = 255

func validName(n string) bool { return len(n) <= maxNameLen && nameRE.MatchString(n) }

func validTag(t string) bool { return tagRE.MatchString(t) }

// route splits "/v2/<name>/<kind>/<ref>" into its parts; ok is false for
// any other path. name may hold slashes; kind is the second-last segment.
func route(path string) (name, kind, ref string, ok bool) {
	rest, found := strings.CutPrefix(path, "/v2/")
	if !found {
		return "", "", "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", "", "", false
	}
	ref = rest[i+1:]
	rest = rest[:i]
	j := strings.LastIndexByte(rest, '/')
	if j <= 0 {
		return "", "", "", false
	}
	return rest[:j], rest[j+1:], ref, true
}

// dockerHub reports whether host (a key of the upstream map or an upstream
// host) is Docker Hub, whose single-component names mean "library/<name>".
func dockerHub(host string) bool {
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return true
	}
	return false
}
