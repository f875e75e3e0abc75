package redact

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"oci://u:pass@host/repo%zz", "oci://u:xxxxx@host/repo%zz"},
		{"oci://token@host/repo", "oci://xxxxx@host/repo"},
		{"s3://b/p?endpoint=http://KEY:SECRET@host", "s3://b/p"},
		{"tier://?near=oci://u:pass@h/r", "tier://"},
		{"http://KEY:SECRET@host:9000", "http://KEY:xxxxx@host:9000"},
		{"http://a@b:c@host/x@y", "http://a@b:xxxxx@host/x@y"},
		{"user:pass@host/repo:tag", "user:xxxxx@host/repo:tag"},
		{"user:pass@host", "user:xxxxx@host"},
		{"user:pass@host:5000", "user:xxxxx@host:5000"},
		{"host/repo@sha256:" + strings.Repeat("a", 64), "host/repo@sha256:" + strings.Repeat("a", 64)},
		{"alpine@sha256:" + strings.Repeat("a", 64), "alpine@sha256:" + strings.Repeat("a", 64)},
		{"alpine:3.20", "alpine:3.20"},
		{"file:///var/cache", "file:///var/cache"},
		{"", ""},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"oci://u:pass@host/repo?x=SECRET#frag", "oci://u:xxxxx@host/repo"},
		{"oci://token@host/repo", "oci://xxxxx@host/repo"},
		{"file:///var/cache?max_bytes=1", "file:///var/cache"},
		{"tier://?near=oci://u:pass@h/r", "tier://"},
		{"mem://", "mem://"},
	} {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := URL(u); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if URL(nil) != "" {
		t.Error("URL(nil) is not empty")
	}
}

func TestError(t *testing.T) {
	_, err := url.Parse("oci://u:pass@host/repo%zz")
	if err == nil || !strings.Contains(err.Error(), "pass") {
		t.Fatalf("url.Parse no longer echoes the password (%v): this test needs a new input", err)
	}
	got := Error(err)
	if strings.Contains(got.Error(), "pass") {
		t.Fatalf("Error(%v) = %v, still has the password", err, got)
	}
	var ue *url.Error
	var esc url.EscapeError
	if !errors.As(got, &ue) || !errors.As(got, &esc) {
		t.Fatalf("Error(%v) lost the *url.Error or its cause: %#v", err, got)
	}
	other := errors.New("x")
	if Error(other) != other || Error(nil) != nil {
		t.Fatal("Error changed an error that is not a *url.Error")
	}
}

func TestURLOpaque(t *testing.T) {
	u, err := url.Parse("u:pass@host/repo")
	if err != nil {
		t.Fatal(err)
	}
	if got := URL(u); strings.Contains(got, "pass") {
		t.Fatalf("URL(%q) = %q", u, got)
	}
}
