package nodeconfig

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Registry is one registry whose pulls go through the mirror.
type Registry struct {
	// Name is the registry as containerd names it in an image reference,
	// and the directory of its hosts.toml under the hosts directory:
	// "docker.io", "ghcr.io", "registry.example:5000". Not containerd's
	// _default: its server line would send every registry's pulls to one
	// server, and the mirror serves only the registries it maps.
	Name string
	// Server is the registry's own endpoint, tried when the mirror
	// fails: "https://registry-1.docker.io". scheme://host[:port] only.
	Server string
}

// ourMarker starts every hosts.toml this package writes: a file that
// does not start with it is someone else's, never changed or removed.
const ourMarker = "# Written by buildcache node-config."

// createdDirMarker is a line of our file when we made its directory, so
// that Remove removes the directory too (if nothing else is in it).
const createdDirMarker = "# buildcache node-config created this directory."

var registryNameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`)

// ValidName reports why name is not a registry name this package writes
// a directory for: a host or a host:port; never a path, nor _default.
func ValidName(name string) error {
	if !registryNameRe.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("nodeconfig: registry %q: want a registry host[:port] (docker.io, registry.example:5000)", name)
	}
	return nil
}

// endpoint checks that s is scheme://host[:port] with scheme http or
// https and returns it without a trailing slash, safe to put between
// TOML quotes.
func endpoint(what, s string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("nodeconfig: %s %q: %s", what, s, why)
	}
	if strings.ContainsAny(s, "\"\\' \t\r\n") || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", bad("quotes, backslashes, spaces and control characters are not allowed")
	}
	if l := strings.ToLower(s); !strings.HasPrefix(l, "http://") && !strings.HasPrefix(l, "https://") {
		return "", bad("want an http:// or https:// URL")
	}
	u, err := url.Parse(strings.TrimSuffix(s, "/"))
	if err != nil {
		return "", bad(err.Error())
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", bad("want an http:// or https:// URL")
	}
	if u.Host == "" || u.Opaque != "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", bad("want scheme://host[:port], no path, query or credentials")
	}
	return u.Scheme + "://" + u.Host, nil
}

// HostsTOML returns the hosts.toml that makes containerd pull r's images
// from mirror first ("http://127.0.0.1:5000": pull and resolve, so tags
// are resolved there too) and from r.Server when the mirror fails:
//
//	server = "https://registry-1.docker.io"
//
//	[host."http://127.0.0.1:5000"]
//	  capabilities = ["pull", "resolve"]
func HostsTOML(mirror string, r Registry) ([]byte, error) {
	return hostsTOML(mirror, r, false)
}

func hostsTOML(mirror string, r Registry, createdDir bool) ([]byte, error) {
	if err := ValidName(r.Name); err != nil {
		return nil, err
	}
	m, err := endpoint("mirror", mirror)
	if err != nil {
		return nil, err
	}
	server, err := endpoint("server of "+r.Name, r.Server)
	if err != nil {
		return nil, err
	}
	if m == server {
		return nil, errors.New("nodeconfig: " + r.Name + ": the mirror is the registry's own server")
	}
	var b strings.Builder
	b.WriteString(ourMarker + " The mirror is tried first, the registry's\n")
	b.WriteString("# own server when it fails. `buildcache node-config --remove` restores\n")
	b.WriteString("# the file this one replaced (kept beside it as " + backupName + ") or\n")
	b.WriteString("# removes this one.\n")
	if createdDir {
		b.WriteString(createdDirMarker + "\n")
	}
	fmt.Fprintf(&b, "\nserver = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, m)
	return []byte(b.String()), nil
}
