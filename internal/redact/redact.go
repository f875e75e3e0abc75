// Package redact takes credentials out of URLs and image references before
// they are printed, so that an error message, a log line or a usage error
// never repeats a password someone put where it does not belong.
//
// Userinfo is the secret: with a password ("user:pass@") the password
// is replaced and the user kept, to say whose it was; a lone user ("x@")
// is replaced whole, since tokens are often passed that way. Query
// strings and fragments are dropped, as they may hold tokens (or, in a
// tier:// URL, whole URLs with their own userinfo).
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask stands in for what was taken out.
const Mask = "xxxxx"

// URL is u as text without its secrets.
func URL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.RawQuery, c.Fragment, c.RawFragment, c.ForceQuery = "", "", "", false
	if c.Opaque != "" {
		// "u:pass@host/x" parses as scheme "u" with an opaque rest.
		return String(c.String())
	}
	if c.Host == "" && c.Path == "" && c.User == nil && c.Scheme != "" {
		return c.Scheme + "://" // url.URL.String would say "tier:"
	}
	if c.User != nil {
		if _, ok := c.User.Password(); ok {
			c.User = url.UserPassword(c.User.Username(), Mask)
		} else {
			c.User = url.User(Mask)
		}
	}
	return c.String()
}

// String is s, a URL or an image reference that may not even parse,
// without its secrets. It works on the text, so that it can be used on
// what url.Parse or a reference parser refused.
func String(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	start := 0
	scheme := strings.Index(s, "://")
	if scheme >= 0 {
		start = scheme + len("://")
	}
	end := len(s)
	if i := strings.IndexByte(s[start:], '/'); i >= 0 {
		end = start + i
	}
	at := strings.LastIndexByte(s[start:end], '@')
	if at < 0 {
		return s
	}
	at += start
	// "alpine@sha256:…" is an image reference with a digest, not userinfo.
	if scheme < 0 && end == len(s) && digest.MatchString(s[at+1:]) {
		return s
	}
	user, _, hasPassword := strings.Cut(s[start:at], ":")
	masked := Mask
	if hasPassword {
		masked = user + ":" + Mask
	}
	return s[:start] + masked + s[at:]
}

// digest is an OCI digest ("algorithm:encoded"), as it follows the "@" of
// an image reference.
var digest = regexp.MustCompile(`^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$`)

// Error returns err, if it is a *url.Error, with its URL redacted:
// url.Parse puts the whole raw URL in its message. Any other error is
// returned as it is: wrap the *url.Error after redacting it, not before.
// The result is still a *url.Error with the same Err, so errors.As and
// errors.Is see what they saw before.
func Error(err error) error {
	ue, ok := err.(*url.Error) //nolint:errorlint // only the error whose text holds the URL
	if !ok {
		return err
	}
	return &url.Error{Op: ue.Op, URL: String(ue.URL), Err: ue.Err}
}
