package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageErrorsHideCredentials: a reference with a password in it, which
// does not parse, is a usage error that does not repeat the password, on
// stderr or in --json; nor does an unknown command that is one.
func TestUsageErrorsHideCredentials(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"warm", "user:pass@host/repo:tag"},
		{"resolve", "localhost:5000/app:v1", "u:pass@localhost:5000/x:v1"},
		{"warm", "pass@harbor.example.com/team/app"},
		{"user:pass@host/repo:tag"},
		{"--json", "warm", "user:pass@host/repo:tag"},
		{"--json", "user:pass@host/repo:tag"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			stdout, stderr, code := cli(t, append([]string{"--cache", dir}, args...)...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if strings.Contains(stdout+stderr, "pass") {
				t.Errorf("the password is repeated:\nstdout: %s\nstderr: %s", stdout, stderr)
			}
			if !strings.Contains(stdout+stderr, "xxxxx@") {
				t.Errorf("the error does not name the reference, redacted:\nstdout: %s\nstderr: %s", stdout, stderr)
			}
		})
	}
}
