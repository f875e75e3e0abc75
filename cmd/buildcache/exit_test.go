package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/staticbuild"
	"github.com/buildcache/buildcache/regclient"
)

func TestExitCode(t *testing.T) {
	_, badName := name.ParseReference("UPPER/case")
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitFailure},
		{context.Canceled, exitFailure},
		{&regclient.RemoteError{Op: "GET blob", Status: 500}, exitFailure},
		{&regclient.RemoteError{Op: "GET blob", Status: 404}, exitFailure},
		// No answer at all: the registry is unreachable, so offline.
		{fmt.Errorf("x: %w", &regclient.RemoteError{Op: "HEAD manifest", Err: &url.Error{Op: "Head", URL: "http://r/v2/", Err: &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}}), exitNotCached},
		{&regclient.RemoteError{Op: "GET blob", Err: io.ErrUnexpectedEOF}, exitNotCached},
		// An answer that is not 200 is not offline: a token server's 401, say.
		{&regclient.RemoteError{Op: "authenticate", Err: errors.New("UNAUTHORIZED")}, exitFailure},
		{usagef("bad"), exitUsage},
		{fmt.Errorf("registry: invalid image reference: %w", badName), exitUsage},
		{fmt.Errorf("x: %w", cache.ErrOffline), exitNotCached},
		{fmt.Errorf("x: %w", cache.ErrNotFound), exitNotCached},
		{fmt.Errorf("x: %w", cache.ErrCorrupt), exitCorrupt},
		{fmt.Errorf("registry: served bytes that are not blob: %w", cache.ErrDigestMismatch), exitCorrupt},
		{fmt.Errorf("localfs: put: %w", cache.ErrNoSpace), exitNoSpace},
		// No space wins over what it was doing when it ran out.
		{fmt.Errorf("%w: %w", cache.ErrNotFound, cache.ErrNoSpace), exitNoSpace},
		{&reportedError{exitCorrupt}, exitCorrupt},
	} {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
	if badName == nil {
		t.Fatal("UPPER/case parsed as a reference")
	}
}

// TestBinary builds the command and runs it as a process, to prove that
// main wires run's exit codes and output to the real ones.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	bin := staticbuild.ForTest(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{[]string{"--cache", dir, "warm", "--policy=never", "127.0.0.1:1/app:v1"}, exitNotCached, "", "offline"},
		{[]string{"--cache", dir, "--json", "stats"}, exitOK, `"blobs": 0`, ""},
		{[]string{"--cache", dir, "gc", "--max-bytes", "lots"}, exitUsage, "", "invalid size"},
		{[]string{"--help"}, exitOK, "Exit codes:", ""},
	} {
		cmd := exec.Command(bin, tt.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tt.wantCode || !strings.Contains(stdout.String(), tt.wantStdout) || !strings.Contains(stderr.String(), tt.wantStderr) {
			t.Errorf("buildcache %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(tt.args, " "), code, tt.wantCode, stdout.String(), stderr.String())
		}
		if slices := tt.args; len(slices) > 2 && slices[2] == "--json" && !json.Valid(stdout.Bytes()) {
			t.Errorf("buildcache %s printed no JSON: %s", strings.Join(tt.args, " "), stdout.String())
		}
	}
}
