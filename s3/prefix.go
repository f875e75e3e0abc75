package s3

import (
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/buildcache/buildcache/internal/redact"
)

// prefixProblem says what is wrong with a key prefix, or "": keys are
// paths to every S3 tool, to BuildKit and to anyone who syncs a bucket to
// a directory, so a prefix that climbs ("../") or means something else to
// some of them (a backslash, a control character) is refused rather than
// kept as given.
func prefixProblem(p string) string {
	if !utf8.ValidString(p) {
		return "not valid UTF-8"
	}
	for _, r := range p {
		switch {
		case r == '\\':
			return "has a backslash (S3 keys use /)"
		case unicode.IsControl(r):
			return "has a control character"
		}
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return fmt.Sprintf("has a %q path segment", seg)
		}
	}
	return ""
}

// checkPrefixes checks New's prefix and, since keys are the prefixes put
// end to end, the keys' beginnings the blobs and manifests prefixes make
// with it.
func checkPrefixes(prefix string, o options) error {
	if p := prefixProblem(prefix); p != "" {
		return fmt.Errorf("s3: New: prefix %q %s", prefix, p)
	}
	if strings.HasPrefix(prefix, "/") {
		return fmt.Errorf(`s3: New: prefix %q starts with "/": keys do not (write %q)`, prefix, strings.TrimLeft(prefix, "/"))
	}
	for _, sub := range []struct{ what, p string }{{"blobs prefix", o.blobsPrefix}, {"manifests prefix", o.manifestsPrefix}} {
		if prefix == "" && strings.HasPrefix(sub.p, "/") {
			return fmt.Errorf(`s3: New: %s %q with an empty prefix makes keys that start with "/"`, sub.what, sub.p)
		}
		if strings.HasPrefix(sub.p, fleetDir) {
			return fmt.Errorf("s3: New: %s %q is under %q, where the fleet's records and leases live", sub.what, sub.p, fleetDir)
		}
	}
	return nil
}

// subPrefix is the check of WithBlobsPrefix and WithManifestsPrefix.
func subPrefix(option, p string) error {
	if problem := prefixProblem(p); problem != "" {
		return fmt.Errorf("s3: %s(%q): %s", option, p, problem)
	}
	return nil
}

// checkEndpoint refuses a client endpoint that carries credentials, which
// the SDK does not use (it signs with its own) and every error naming the
// endpoint would repeat. Its errors name the endpoint redacted.
func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil {
		return fmt.Errorf("s3: New: client's endpoint: %w", redact.Error(err))
	}
	if u.User != nil {
		return fmt.Errorf("s3: New: client's endpoint %s carries credentials: the SDK's credential chain (or the client's Credentials) gives them", redact.URL(u))
	}
	return nil
}
