package testserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"golang.org/x/sys/unix"
)

// BuildkitdInstallHint says how to get what StartBuildkitd needs.
const BuildkitdInstallHint = "apt-get install runc; build buildkitd v0.33.1 as INFRA.md says " +
	"(scripts/test does it), or set BUILDCACHE_BUILDKITD_BIN"

// Buildkitd is a running buildkitd with the OCI worker (runc), its state
// in a temp dir and its gRPC API on a unix socket.
type Buildkitd struct {
	Addr string // "unix:///tmp/bk…/buildkitd.sock", for client.New
	Root string // --root: snapshots, content, cache metadata

	*proc
	sock string // socket directory (short: sockets have a ~108 byte path limit)
}

// errUnavailable marks what is missing on the machine, as opposed to a
// daemon that was there and failed.
var errUnavailable = errors.New("unavailable")

// buildkitdBinary finds buildkitd: $BUILDCACHE_BUILDKITD_BIN, buildkitd on
// PATH, or buildkitd in $(go env GOPATH)/bin, where scripts/test puts it.
func buildkitdBinary() (string, error) {
	return toolBinary("BUILDCACHE_BUILDKITD_BIN", "buildkitd", BuildkitdInstallHint)
}

// toolBinary finds a program: $env, name on PATH, or name in $(go env
// GOPATH)/bin, where scripts/test builds the ones Debian lacks; missing,
// the error says hint and wraps errUnavailable.
func toolBinary(env, name, hint string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			p := filepath.Join(dir, "bin", name)
			if info, err := os.Stat(p); err == nil && !info.IsDir() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no %s found: %s: %w", name, hint, errUnavailable)
}

// StartBuildkitd starts a buildkitd of its own for this test and waits
// until its API answers; it is stopped when the test ends, and its log is
// printed if the test failed. Without buildkitd, runc or root the test
// skips (fails under CI).
func StartBuildkitd(t testing.TB) *Buildkitd {
	t.Helper()
	return startForTest(t, "buildkitd", func(b *Buildkitd) string { return b.Root }, func() (*Buildkitd, error) { return launchBuildkitd() })
}

var shared sharedServer[*Buildkitd]

// SharedBuildkitd returns one buildkitd for every test of the test binary
// that calls it, started by the first. Its build cache is shared too:
// tests that prune it or count cached steps must not run in parallel with
// others that use it. If the test fails, what the daemon logged during
// the test is printed. Call StopSharedBuildkitd from TestMain after m.Run.
func SharedBuildkitd(t testing.TB) *Buildkitd {
	t.Helper()
	b := shared.get(t, func() (*Buildkitd, error) { return launchBuildkitd() })
	select {
	case werr := <-b.exited:
		b.exited <- werr
		t.Fatalf("shared buildkitd has exited: %v\n%s", werr, b.Log())
	default:
	}
	start := len(b.Log())
	t.Cleanup(func() {
		if t.Failed() {
			if l := b.Log(); len(l) >= start {
				t.Logf("buildkitd log during the test (%s):\n%s", b.Root, l[start:])
			}
		}
	})
	return b
}

// StopSharedBuildkitd stops the daemon SharedBuildkitd started, if any.
func StopSharedBuildkitd() { shared.stop() }

// launchBuildkitd starts buildkitd; extra are more command-line flags
// (StartBuildkitdWithConfig's --config).
func launchBuildkitd(extra ...string) (*Buildkitd, error) {
	bin, err := buildkitdBinary()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("buildkitd with the OCI worker needs root here: %w", errUnavailable)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return nil, fmt.Errorf("buildkitd's OCI worker needs runc (apt-get install runc): %w", errUnavailable)
	}
	sock, err := os.MkdirTemp("/tmp", "bk")
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "buildkitd-root-")
	if err != nil {
		os.RemoveAll(sock)
		return nil, err
	}
	b := &Buildkitd{
		Addr: "unix://" + filepath.Join(sock, "buildkitd.sock"),
		Root: root,
		sock: sock,
	}
	b.proc, err = startProc("buildkitd", bin, append([]string{
		"--root", root,
		"--addr", b.Addr,
		"--oci-worker=true",
		"--containerd-worker=false",
	}, extra...)...)
	if err != nil {
		b.removeDirs()
		return nil, err
	}
	if err := b.waitReady(60*time.Second, b.Addr, b.ready); err != nil {
		b.Stop()
		return nil, fmt.Errorf("%v\n%s", err, b.Log())
	}
	return b, nil
}

// ready says whether the socket accepts connections and ListWorkers
// answers with at least one worker.
func (b *Buildkitd) ready(ctx context.Context) error {
	c, err := net.DialTimeout("unix", strings.TrimPrefix(b.Addr, "unix://"), time.Second)
	if err != nil {
		return err
	}
	c.Close()
	bc, err := client.New(ctx, b.Addr)
	if err != nil {
		return err
	}
	defer bc.Close()
	ws, err := bc.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("ListWorkers: %w", err)
	}
	if len(ws) == 0 {
		return errors.New("no worker")
	}
	return nil
}

// Client returns a client of the daemon, closed when the test ends.
func (b *Buildkitd) Client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), b.Addr)
	if err != nil {
		t.Fatalf("buildkit client for %s: %v", b.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// PruneAll empties the daemon's build cache, as `buildctl prune --all`
// does, and waits until DiskUsage reports nothing left: records still in
// use when Prune runs are released a moment later.
func (b *Buildkitd) PruneAll(t testing.TB) {
	t.Helper()
	c := b.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var left int
	for ctx.Err() == nil {
		if err := c.Prune(ctx, nil, client.PruneAll); err != nil {
			t.Fatalf("buildkitd prune: %v", err)
		}
		du, err := c.DiskUsage(ctx)
		if err != nil {
			t.Fatalf("buildkitd disk usage: %v", err)
		}
		if left = len(du); left == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("buildkitd prune: %d cache records still there after a minute", left)
}

// Stop stops the daemon (SIGTERM, SIGKILL after 15 s), unmounts what it
// left mounted under its root and removes its directories. It is safe to
// call more than once.
func (b *Buildkitd) Stop() { b.stop(15*time.Second, b.removeDirs) }

func (b *Buildkitd) removeDirs() {
	unmountUnder(b.Root)
	os.RemoveAll(b.Root)
	os.RemoveAll(b.sock)
}

// unmountUnder detaches every mount below dir, deepest first, so that a
// killed daemon's snapshots do not keep its root busy.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			p := unescapeMountPath(fields[4])
			if p == dir || strings.HasPrefix(p, dir+"/") {
				points = append(points, p)
			}
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		unix.Unmount(points[i], unix.MNT_DETACH)
	}
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				out.WriteByte(v)
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

// binfmtDir is where the kernel's binfmt_misc handlers are listed.
const binfmtDir = "/proc/sys/fs/binfmt_misc"

// Arm64Emulation says whether linux/arm64 programs run on this machine:
// nil on arm64 itself, or when an enabled binfmt_misc handler for aarch64
// ELF binaries (qemu-user-static's qemu-aarch64) exists with the F flag,
// so that it works inside containers too. The error says what to do.
func Arm64Emulation() error {
	if isArm64Host() {
		return nil
	}
	if _, err := os.Stat(filepath.Join(binfmtDir, "register")); err != nil {
		return fmt.Errorf("arm64 emulation: binfmt_misc is not mounted (mount -t binfmt_misc binfmt_misc %s): %w", binfmtDir, errUnavailable)
	}
	entries, err := os.ReadDir(binfmtDir)
	if err != nil {
		return fmt.Errorf("arm64 emulation: %v: %w", err, errUnavailable)
	}
	var problems []string
	for _, e := range entries {
		if e.Name() == "register" || e.Name() == "status" {
			continue
		}
		h, err := readBinfmt(filepath.Join(binfmtDir, e.Name()))
		if err != nil || !h.aarch64() {
			continue
		}
		switch {
		case !h.enabled:
			problems = append(problems, e.Name()+" is disabled (update-binfmts --enable "+e.Name()+")")
		case !strings.Contains(h.flags, "F"):
			problems = append(problems, e.Name()+" lacks the F flag: its interpreter "+h.interpreter+" would have to exist inside every container (use qemu-user-static's registration)")
		default:
			if _, err := os.Stat(h.interpreter); err != nil {
				problems = append(problems, e.Name()+": interpreter "+h.interpreter+" is missing")
				continue
			}
			return nil
		}
	}
	if len(problems) == 0 {
		problems = append(problems, "no binfmt_misc handler for aarch64 (apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64)")
	}
	return fmt.Errorf("arm64 emulation: %s: %w", strings.Join(problems, "; "), errUnavailable)
}

// RequireArm64Emulation skips the test (fails it under CI) when
// linux/arm64 programs cannot run here; see Arm64Emulation.
func RequireArm64Emulation(t testing.TB) {
	t.Helper()
	if err := Arm64Emulation(); err != nil {
		unavailable(t, err)
	}
}

type binfmtHandler struct {
	enabled     bool
	interpreter string
	flags       string
	magic       string // hex
	mask        string // hex, may be empty
}

func readBinfmt(path string) (binfmtHandler, error) {
	var h binfmtHandler
	b, err := os.ReadFile(path)
	if err != nil {
		return h, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch k {
		case "enabled":
			h.enabled = true
		case "interpreter":
			h.interpreter = v
		case "flags:":
			h.flags = v
		case "magic":
			h.magic = v
		case "mask":
			h.mask = v
		}
	}
	return h, nil
}

// aarch64 reports whether the handler's magic matches 64-bit
// little-endian ELF files for machine EM_AARCH64 (183 = 0xb7).
func (h binfmtHandler) aarch64() bool {
	// ELF ident: 7f 'E' 'L' 'F', class 2 (64-bit), data 1 (little endian);
	// e_machine is bytes 18-19.
	return strings.HasPrefix(h.magic, "7f454c460201") && len(h.magic) >= 40 && h.magic[36:40] == "b700"
}

func isArm64Host() bool { return runtime.GOOS == "linux" && runtime.GOARCH == "arm64" }

// LaunchBuildkitd starts a buildkitd as StartBuildkitd does, for programs
// that are not tests (examples); the caller stops it with Stop.
func LaunchBuildkitd() (*Buildkitd, error) { return launchBuildkitd() }
