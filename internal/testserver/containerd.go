package testserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ContainerdInstallHint says how to get what StartContainerd needs.
const ContainerdInstallHint = "apt-get install containerd (scripts/test does it), or set BUILDCACHE_CONTAINERD_BIN and BUILDCACHE_CTR_BIN"

// CrictlInstallHint says how to get what StartContainerdCRI needs beyond
// containerd.
const CrictlInstallHint = "go install sigs.k8s.io/cri-tools/cmd/crictl@v1.34.0 (scripts/test does it; Debian has no cri-tools), or set BUILDCACHE_CRICTL_BIN"

// Containerd is a running containerd of one test: its root, state and
// gRPC socket in temp dirs, no CRI plugin (StartContainerd), so that it
// only needs what pulling needs (content store, metadata, a snapshotter
// to unpack into), or with the CRI plugin's image service
// (StartContainerdCRI), which the kubelet pulls through.
type Containerd struct {
	Addr string // socket path, for ctr --address
	Root string // --root: content store, metadata, snapshots

	*proc
	ctr    string
	crictl string // StartContainerdCRI's
	dir    string // socket and state directory (short: ~108 byte socket path limit)
}

// containerdBinaries finds containerd and ctr: the BUILDCACHE_* variables
// or PATH.
func containerdBinaries() (containerd, ctr string, err error) {
	find := func(env, name string) (string, error) {
		if p := os.Getenv(env); p != "" {
			return p, nil
		}
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		return "", fmt.Errorf("no %s found: %s: %w", name, ContainerdInstallHint, errUnavailable)
	}
	if containerd, err = find("BUILDCACHE_CONTAINERD_BIN", "containerd"); err != nil {
		return "", "", err
	}
	if ctr, err = find("BUILDCACHE_CTR_BIN", "ctr"); err != nil {
		return "", "", err
	}
	return containerd, ctr, nil
}

// StartContainerd starts a containerd of its own for this test and waits
// until it answers; it is stopped when the test ends, and its log is
// printed if the test failed. Without containerd, ctr or root the test
// skips (fails under CI).
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	return startForTest(t, "containerd", func(c *Containerd) string { return c.Root },
		func() (*Containerd, error) { return launchContainerd("") })
}

// StartContainerdCRI is StartContainerd with the CRI plugin loaded, its
// registry config_path set to hostsDir (containerd's hosts.toml files,
// read on every pull) and its images unpacked with the native
// snapshotter, for Crictl. The CRI plugin's runtime side (CNI, cgroups,
// runc) is not set up: it serves image pulls, not pods. Without crictl
// the test skips (fails under CI).
func StartContainerdCRI(t testing.TB, hostsDir string) *Containerd {
	t.Helper()
	return startForTest(t, "containerd", func(c *Containerd) string { return c.Root },
		func() (*Containerd, error) { return launchContainerd(hostsDir) })
}

// launchContainerd starts containerd, with the CRI plugin when hostsDir
// is not empty.
func launchContainerd(hostsDir string) (*Containerd, error) {
	bin, ctr, err := containerdBinaries()
	if err != nil {
		return nil, err
	}
	var crictl string
	if hostsDir != "" {
		if crictl, err = toolBinary("BUILDCACHE_CRICTL_BIN", "crictl", CrictlInstallHint); err != nil {
			return nil, err
		}
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("containerd needs root here: %w", errUnavailable)
	}
	dir, err := os.MkdirTemp("/tmp", "ctd")
	if err != nil {
		return nil, err
	}
	c := &Containerd{
		Addr:   filepath.Join(dir, "c.sock"),
		Root:   filepath.Join(dir, "root"),
		ctr:    ctr,
		crictl: crictl,
		dir:    dir,
	}
	// Only the plugins a pull needs: CRI would want CNI and a kubelet
	// (loaded only for StartContainerdCRI, for its image service), and
	// the snapshotters below need file systems or devices a test machine
	// lacks (they would only log errors). "opt" would install into /opt.
	disabled, cri := `"io.containerd.grpc.v1.cri", `, ""
	if hostsDir != "" {
		disabled = ""
		cri = fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf"), hostsDir)
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [%s"io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
%s`, c.Root, filepath.Join(dir, "state"), disabled, c.Addr, filepath.Join(dir, "opt"), cri)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if c.proc, err = startProc("containerd", bin, "--config", cfgPath); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Ready when the socket accepts connections and `ctr version` gets
	// the server's answer.
	err = c.waitReady(30*time.Second, c.Addr, func(ctx context.Context) error {
		conn, err := net.DialTimeout("unix", c.Addr, time.Second)
		if err != nil {
			return err
		}
		conn.Close()
		if out, err := c.command(ctx, "version").CombinedOutput(); err != nil {
			return fmt.Errorf("ctr version: %v\n%s", err, out)
		}
		return nil
	})
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("%v\n%s", err, c.Log())
	}
	return c, nil
}

// Ctr runs `ctr --address <socket> args…` and returns its combined
// output; the error includes the output.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	out, err := c.command(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (c *Containerd) command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, c.ctr, append([]string{"--address", c.Addr}, args...)...)
}

// Crictl runs `crictl --runtime-endpoint unix://<socket> --image-endpoint
// unix://<socket> args…` against a containerd of StartContainerdCRI and
// returns its combined output; the error includes the output.
func (c *Containerd) Crictl(ctx context.Context, args ...string) (string, error) {
	if c.crictl == "" {
		return "", errors.New("testserver: Crictl on a containerd without CRI (StartContainerdCRI)")
	}
	cfg := filepath.Join(c.dir, "crictl.yaml") // not /etc/crictl.yaml
	ep := "unix://" + c.Addr
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 120\n", ep, ep), 0o644); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, c.crictl, append([]string{"--config", cfg}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Stop stops the daemon (SIGTERM, SIGKILL after 15 s), unmounts what it
// left mounted under its directory and removes it. It is safe to call
// more than once.
func (c *Containerd) Stop() {
	c.stop(15*time.Second, func() {
		unmountUnder(c.dir)
		os.RemoveAll(c.dir)
	})
}
