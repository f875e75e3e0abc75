package testserver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DockerdInstallHint says how to get what StartDockerd needs.
const DockerdInstallHint = "apt-get install docker.io (Debian's Docker 20.10; scripts/test does it), or set BUILDCACHE_DOCKERD_BIN and BUILDCACHE_DOCKER_BIN"

// Dockerd is a running Docker daemon of one test: its data, exec root
// and API socket in a temp dir, no bridge network and no iptables rules
// (nothing on the machine's network changes), the vfs storage driver
// (no overlay mounts), and --registry-mirror set, as StreamPark's build
// hosts have it in daemon.json.
type Dockerd struct {
	Host string // "unix:///tmp/dk…/docker.sock", for docker -H
	Root string // --data-root: images, build cache

	*proc
	docker string
	dir    string
}

// dockerBinaries finds dockerd and the docker CLI: the BUILDCACHE_*
// variables, else dockerd on PATH and the docker installed with it (the
// daemon's own version: Debian's /usr/bin/docker beside /usr/sbin/dockerd)
// or on PATH.
func dockerBinaries() (dockerd, docker string, err error) {
	if dockerd, err = toolBinary("BUILDCACHE_DOCKERD_BIN", "dockerd", DockerdInstallHint); err != nil {
		return "", "", err
	}
	if p := os.Getenv("BUILDCACHE_DOCKER_BIN"); p != "" {
		return dockerd, p, nil
	}
	beside := filepath.Join(filepath.Dir(filepath.Dir(dockerd)), "bin", "docker")
	if info, err := os.Stat(beside); err == nil && !info.IsDir() {
		return dockerd, beside, nil
	}
	docker, err = toolBinary("BUILDCACHE_DOCKER_BIN", "docker", DockerdInstallHint)
	return dockerd, docker, err
}

// StartDockerd starts a Docker daemon of its own for this test, with
// mirror (http://127.0.0.1:PORT) as its registry mirror, and waits until
// it answers; it is stopped when the test ends, and its log is printed if
// the test failed. Without dockerd, docker or root the test skips (fails
// under CI).
func StartDockerd(t testing.TB, mirror string) *Dockerd {
	t.Helper()
	return startForTest(t, "dockerd", func(d *Dockerd) string { return d.Root },
		func() (*Dockerd, error) { return launchDockerd(mirror) })
}

func launchDockerd(mirror string) (*Dockerd, error) {
	bin, docker, err := dockerBinaries()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("dockerd needs root here: %w", errUnavailable)
	}
	dir, err := os.MkdirTemp("/tmp", "dk") // short: the sockets of its containerd live under it
	if err != nil {
		return nil, err
	}
	d := &Dockerd{Host: "unix://" + filepath.Join(dir, "docker.sock"), Root: filepath.Join(dir, "root"),
		docker: docker, dir: dir}
	// Its own daemon.json, not /etc/docker's, and its trust key in its
	// directory rather than /etc/docker/key.json (Docker 20.10 writes one).
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "{\"deprecated-key-path\": %q}\n", filepath.Join(dir, "key.json")), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.proc, err = startProc("dockerd", bin,
		"--config-file", cfg,
		"--data-root", d.Root,
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--host", d.Host,
		"--iptables=false", "--bridge=none", "--storage-driver=vfs",
		"--registry-mirror", mirror)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Ready when `docker version` gets the daemon's answer.
	err = d.waitReady(60*time.Second, d.Host, func(ctx context.Context) error {
		if out, err := d.command(ctx, "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
			return fmt.Errorf("docker version: %v\n%s", err, out)
		}
		return nil
	})
	if err != nil {
		d.Stop()
		return nil, fmt.Errorf("%v\n%s", err, d.Log())
	}
	return d, nil
}

// Docker runs `docker -H <socket> args…` with a client configuration of
// its own (no credentials of the machine's) and env added to the
// environment, and returns its combined output; the error includes it.
func (d *Dockerd) Docker(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := d.command(ctx, args...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (d *Dockerd) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.docker, append([]string{"-H", d.Host}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(d.dir, "cli"))
	return cmd
}

// Stop stops the daemon (SIGTERM, SIGKILL after 30 s), which stops its
// containerd, unmounts what they left mounted under its directory and
// removes it. It is safe to call more than once.
func (d *Dockerd) Stop() {
	d.stop(30*time.Second, func() {
		unmountUnder(d.dir)
		os.RemoveAll(d.dir)
	})
}
