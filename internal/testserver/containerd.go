package testserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ContainerdInstallHint says how to get what StartContainerd needs.
const ContainerdInstallHint = "apt-get install containerd (scripts/test does it), or set BUILDCACHE_CONTAINERD_BIN and BUILDCACHE_CTR_BIN"

// Containerd is a running containerd of one test: its root, state and
// gRPC socket in temp dirs, no CRI plugin, so that it only needs what
// pulling needs (content store, metadata, a snapshotter to unpack into).
type Containerd struct {
	Addr string // socket path, for ctr --address
	Root string // --root: content store, metadata, snapshots

	ctr    string
	dir    string // socket and state directory (short: ~108 byte socket path limit)
	cmd    *exec.Cmd
	exited chan error
	log    *LockedBuffer
	once   sync.Once
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
	return startForTest(t, "containerd", func(c *Containerd) string { return c.Root }, launchContainerd)
}

func launchContainerd() (*Containerd, error) {
	bin, ctr, err := containerdBinaries()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("containerd needs root here: %w", errUnavailable)
	}
	dir, err := os.MkdirTemp("/tmp", "ctd")
	if err != nil {
		return nil, err
	}
	c := &Containerd{
		Addr: filepath.Join(dir, "c.sock"),
		Root: filepath.Join(dir, "root"),
		ctr:  ctr,
		dir:  dir,
		log:  &LockedBuffer{},
	}
	// Only the plugins a pull needs: CRI would want CNI and a kubelet, and
	// the snapshotters below need file systems or devices a test machine
	// lacks (they would only log errors). "opt" would install into /opt.
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, c.Root, filepath.Join(dir, "state"), c.Addr, filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.cmd = exec.Command(bin, "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	c.exited = make(chan error, 1)
	go func(ch chan<- error) { ch <- c.cmd.Wait() }(c.exited)
	if err := c.waitReady(30 * time.Second); err != nil {
		c.Stop()
		return nil, fmt.Errorf("%v\n%s", err, c.log)
	}
	return c, nil
}

// waitReady waits until the socket accepts connections and `ctr version`
// gets the server's answer.
func (c *Containerd) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-c.exited:
			c.exited <- err
			return fmt.Errorf("containerd exited before answering on %s: %v", c.Addr, err)
		default:
		}
		if conn, err := net.DialTimeout("unix", c.Addr, time.Second); err == nil {
			conn.Close()
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			out, err := c.command(ctx, "version").CombinedOutput()
			cancel()
			if err == nil {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("ctr version on %s: %v\n%s", c.Addr, err, out)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not listen on %s within %s", c.Addr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// Log is what the daemon printed so far.
func (c *Containerd) Log() string { return c.log.String() }

// Stop stops the daemon (SIGTERM, SIGKILL after 15 s), unmounts what it
// left mounted under its directory and removes it. It is safe to call
// more than once.
func (c *Containerd) Stop() {
	c.once.Do(func() {
		if c.cmd != nil && c.cmd.Process != nil {
			c.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-c.exited:
			case <-time.After(15 * time.Second):
				c.cmd.Process.Kill()
				<-c.exited
			}
		}
		unmountUnder(c.dir)
		os.RemoveAll(c.dir)
	})
}
