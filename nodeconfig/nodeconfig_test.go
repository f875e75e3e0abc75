package nodeconfig_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pelletier/go-toml/v2"

	"github.com/buildcache/buildcache/nodeconfig"
)

const mirrorURL = "http://127.0.0.1:5000"

var (
	hub  = nodeconfig.Registry{Name: "docker.io", Server: "https://registry-1.docker.io"}
	ghcr = nodeconfig.Registry{Name: "ghcr.io", Server: "https://ghcr.io"}
)

// hostsFile is what containerd reads of a hosts.toml.
type hostsFile struct {
	Server string `toml:"server"`
	Host   map[string]struct {
		Capabilities []string `toml:"capabilities"`
	} `toml:"host"`
}

func parseHosts(t *testing.T, b []byte) hostsFile {
	t.Helper()
	var h hostsFile
	if err := toml.Unmarshal(b, &h); err != nil {
		t.Fatalf("not TOML: %v\n%s", err, b)
	}
	return h
}

func TestHostsTOML(t *testing.T) {
	b, err := nodeconfig.HostsTOML(mirrorURL+"/", hub)
	if err != nil {
		t.Fatal(err)
	}
	h := parseHosts(t, b)
	if h.Server != "https://registry-1.docker.io" || len(h.Host) != 1 {
		t.Fatalf("hosts.toml = %+v\n%s", h, b)
	}
	if got := h.Host[mirrorURL].Capabilities; !cmp.Equal(got, []string{"pull", "resolve"}) {
		t.Errorf("the mirror's capabilities = %v, want pull and resolve\n%s", got, b)
	}
	if !bytes.Contains(b, []byte("\nserver = \"https://registry-1.docker.io\"\n\n[host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n")) {
		t.Errorf("not the documented layout:\n%s", b)
	}
}

// Malformed names and URLs are refused before anything is written, and
// nothing a caller gives can add a line or a table to the file.
func TestMalformedInput(t *testing.T) {
	for _, name := range []string{"", "_default", ".", "..", "../etc", "a/b", ".hidden", "docker.io\n", "a\"b", "x..y", "-x", "x:", "x:123456", "host name", "docker.io/library"} {
		if _, err := nodeconfig.HostsTOML(mirrorURL, nodeconfig.Registry{Name: name, Server: "https://x.example"}); err == nil {
			t.Errorf("registry name %q accepted", name)
		}
		dir := t.TempDir()
		if _, err := nodeconfig.Apply(dir, mirrorURL, []nodeconfig.Registry{{Name: name, Server: "https://x.example"}}); err == nil {
			t.Errorf("Apply with registry name %q succeeded", name)
		}
		if _, err := nodeconfig.Remove(dir, []string{name}); err == nil {
			t.Errorf("Remove with registry name %q succeeded", name)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("registry name %q: %d entries written", name, len(entries))
		}
	}
	for _, u := range []string{"", "127.0.0.1:5000", "ftp://x.example", "http://", "http://x.example/v2", "http://u:p@x.example",
		"http://x.example?a=b", "http://x.example#f", "http://x.example\"\n[host.\"http://evil\"]", "http://x.example\\", "http://x .example", "http://x.example\t"} {
		if _, err := nodeconfig.HostsTOML(u, hub); err == nil {
			t.Errorf("mirror %q accepted", u)
		}
		if _, err := nodeconfig.HostsTOML(mirrorURL, nodeconfig.Registry{Name: "docker.io", Server: u}); err == nil {
			t.Errorf("server %q accepted", u)
		}
	}
	if _, err := nodeconfig.HostsTOML("https://registry-1.docker.io", hub); err == nil {
		t.Error("a mirror that is the registry's own server was accepted")
	}
	for _, regs := range [][]nodeconfig.Registry{nil, {hub, hub}} {
		if _, err := nodeconfig.Apply(t.TempDir(), mirrorURL, regs); err == nil {
			t.Errorf("Apply(%v) succeeded", regs)
		}
	}
	for _, name := range []string{"docker.io", "registry.example:5000", "127.0.0.1:5000", "Localhost"} {
		if err := nodeconfig.ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v", name, err)
		}
	}
}

// fileState is what a test checks of a file: bytes, mode, inode.
type fileState struct {
	data  string
	mode  os.FileMode
	inode uint64
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{string(b), st.Mode(), st.Sys().(*syscall.Stat_t).Ino}
}

func mustApply(t *testing.T, dir string, want []nodeconfig.Action, regs ...nodeconfig.Registry) {
	t.Helper()
	res, err := nodeconfig.Apply(dir, mirrorURL, regs)
	if err != nil {
		t.Fatal(err)
	}
	checkActions(t, "Apply", res, want)
}

func mustRemove(t *testing.T, dir string, want []nodeconfig.Action, names ...string) {
	t.Helper()
	res, err := nodeconfig.Remove(dir, names)
	if err != nil {
		t.Fatal(err)
	}
	checkActions(t, "Remove", res, want)
}

func checkActions(t *testing.T, what string, res []nodeconfig.Result, want []nodeconfig.Action) {
	t.Helper()
	got := make([]nodeconfig.Action, len(res))
	for i, r := range res {
		got[i] = r.Action
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s actions (-want +got):\n%s", what, diff)
	}
}

// noTemps fails if a temp file of Apply is left in dir.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temp file %s left in %s", e.Name(), dir)
		}
	}
}

// A registry with no hosts.toml gets ours, in a directory Apply makes;
// Remove removes both, and nothing else is touched.
func TestApplyRemoveFresh(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs.d") // made by Apply
	other := filepath.Join(dir, "quay.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(other), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, []byte("server = \"https://quay.io\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	untouched := stateOf(t, other)

	mustApply(t, dir, []nodeconfig.Action{nodeconfig.Written, nodeconfig.Written}, hub, ghcr)
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	st := stateOf(t, path)
	if h := parseHosts(t, []byte(st.data)); h.Server != hub.Server || len(h.Host[mirrorURL].Capabilities) != 2 {
		t.Errorf("written: %+v", h)
	}
	if st.mode != 0o644 {
		t.Errorf("mode %v, want 0644 (containerd runs as root, but anyone may read where it pulls from)", st.mode)
	}
	noTemps(t, filepath.Join(dir, "docker.io"))
	mustApply(t, dir, []nodeconfig.Action{nodeconfig.Unchanged, nodeconfig.Unchanged}, hub, ghcr)
	if again := stateOf(t, path); again != st {
		t.Error("an Apply that changes nothing rewrote the file")
	}
	if _, err := nodeconfig.Apply(dir, "http://127.0.0.1:5001", []nodeconfig.Registry{hub}); err != nil {
		t.Fatal(err)
	}
	if h := parseHosts(t, []byte(stateOf(t, path).data)); len(h.Host["http://127.0.0.1:5001"].Capabilities) != 2 {
		t.Errorf("after an Apply with another mirror: %+v", h)
	}

	mustRemove(t, dir, []nodeconfig.Action{nodeconfig.Removed, nodeconfig.Removed}, "docker.io", "ghcr.io")
	for _, r := range []string{"docker.io", "ghcr.io"} {
		if _, err := os.Lstat(filepath.Join(dir, r)); !os.IsNotExist(err) {
			t.Errorf("the directory Apply made for %s is still there (%v)", r, err)
		}
	}
	if got := stateOf(t, other); got != untouched {
		t.Errorf("a registry not named was touched: %+v, was %+v", got, untouched)
	}
	mustRemove(t, dir, []nodeconfig.Action{nodeconfig.Absent}, "docker.io")
	mustRemove(t, filepath.Join(dir, "missing"), []nodeconfig.Action{nodeconfig.Absent}, "docker.io")
}

// A hosts.toml of someone else's is kept, the very file (bytes, mode,
// inode), and put back by Remove; a directory that was there stays, with
// what else is in it.
func TestApplyKeepsAndRestores(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "docker.io")
	if err := os.Mkdir(reg, 0o755); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(reg, "hosts.toml")
	if err := os.WriteFile(theirs, []byte("# the node's own\nserver = \"https://registry-1.docker.io\"\n[host.\"https://corp-mirror.example\"]\n  capabilities = [\"pull\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(reg, "ca.crt"), []byte("a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, theirs)

	mustApply(t, dir, []nodeconfig.Action{nodeconfig.Replaced}, hub)
	if got := stateOf(t, filepath.Join(reg, "hosts.toml.buildcache-backup")); got != before {
		t.Errorf("backup %+v, want the original %+v", got, before)
	}
	if h := parseHosts(t, []byte(stateOf(t, theirs).data)); h.Server != hub.Server || h.Host[mirrorURL].Capabilities == nil {
		t.Errorf("after Apply: %+v", h)
	}
	mustApply(t, dir, []nodeconfig.Action{nodeconfig.Unchanged}, hub)
	if got := stateOf(t, filepath.Join(reg, "hosts.toml.buildcache-backup")); got != before {
		t.Errorf("a second Apply changed the backup: %+v", got)
	}

	mustRemove(t, dir, []nodeconfig.Action{nodeconfig.Restored}, "docker.io")
	if got := stateOf(t, theirs); got != before {
		t.Errorf("restored %+v, want the original %+v", got, before)
	}
	if _, err := os.Lstat(filepath.Join(reg, "hosts.toml.buildcache-backup")); !os.IsNotExist(err) {
		t.Errorf("the backup is left after the restore (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(reg, "ca.crt")); err != nil {
		t.Errorf("the registry's certificate: %v", err)
	}
	noTemps(t, reg)
	// Theirs again: Remove leaves it.
	mustRemove(t, dir, []nodeconfig.Action{nodeconfig.NotOurs}, "docker.io")
	if got := stateOf(t, theirs); got != before {
		t.Errorf("Remove touched a file not ours: %+v", got)
	}
}

// A hosts.toml someone put in place of ours while a backup of the
// original is kept: two versions of someone else's, so neither Apply nor
// Remove overwrites or removes anything.
func TestNotOursWithBackup(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "docker.io")
	if err := os.Mkdir(reg, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(reg, "hosts.toml")
	if err := os.WriteFile(path, []byte("server = \"https://one.example\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustApply(t, dir, []nodeconfig.Action{nodeconfig.Replaced}, hub)
	if err := os.WriteFile(path+".new", []byte("server = \"https://two.example\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	current, backup := stateOf(t, path), stateOf(t, path+".buildcache-backup")
	if _, err := nodeconfig.Apply(dir, mirrorURL, []nodeconfig.Registry{hub}); !errors.Is(err, nodeconfig.ErrNotOurs) {
		t.Errorf("Apply = %v, want ErrNotOurs", err)
	}
	if _, err := nodeconfig.Remove(dir, []string{"docker.io"}); !errors.Is(err, nodeconfig.ErrNotOurs) {
		t.Errorf("Remove = %v, want ErrNotOurs", err)
	}
	if stateOf(t, path) != current || stateOf(t, path+".buildcache-backup") != backup {
		t.Error("a file was changed")
	}
}

// Nothing is written, read or removed through a link below the hosts
// directory, and a refused registry stops the whole Apply before any file
// is written.
func TestRefusesLinks(t *testing.T) {
	elsewhere := t.TempDir()
	target := filepath.Join(elsewhere, "hosts.toml")
	if err := os.WriteFile(target, []byte("server = \"https://elsewhere.example\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	targetState := stateOf(t, target)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, reg string)
	}{
		{"registry directory", func(t *testing.T, reg string) {
			if err := os.Symlink(elsewhere, reg); err != nil {
				t.Fatal(err)
			}
		}},
		{"hosts.toml", func(t *testing.T, reg string) {
			mkdir(t, reg)
			if err := os.Symlink(target, filepath.Join(reg, "hosts.toml")); err != nil {
				t.Fatal(err)
			}
		}},
		{"backup", func(t *testing.T, reg string) {
			mkdir(t, reg)
			if err := os.Symlink(target, filepath.Join(reg, "hosts.toml.buildcache-backup")); err != nil {
				t.Fatal(err)
			}
		}},
		{"fifo as hosts.toml", func(t *testing.T, reg string) {
			mkdir(t, reg)
			if err := syscall.Mkfifo(filepath.Join(reg, "hosts.toml"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, filepath.Join(dir, "ghcr.io"))
			_, err := nodeconfig.Apply(dir, mirrorURL, []nodeconfig.Registry{hub, ghcr})
			if !errors.Is(err, nodeconfig.ErrLink) {
				t.Fatalf("Apply = %v, want ErrLink", err)
			}
			if _, err := os.Lstat(filepath.Join(dir, "docker.io")); !os.IsNotExist(err) {
				t.Errorf("Apply wrote docker.io before refusing ghcr.io (%v)", err)
			}
			if _, err := nodeconfig.Remove(dir, []string{"ghcr.io"}); !errors.Is(err, nodeconfig.ErrLink) {
				t.Errorf("Remove = %v, want ErrLink", err)
			}
			if got := stateOf(t, target); got != targetState {
				t.Errorf("the link's target changed: %+v", got)
			}
			if entries, _ := os.ReadDir(elsewhere); len(entries) != 1 {
				t.Errorf("%d entries where the link points, want the one there was", len(entries))
			}
		})
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A reader of hosts.toml (containerd, on every pull) sees one complete
// file or the other while Apply replaces it again and again, and a temp
// file a killed Apply left is swept by the next.
func TestApplyIsAtomic(t *testing.T) {
	dir := t.TempDir()
	mustApply(t, dir, []nodeconfig.Action{nodeconfig.Written}, hub)
	reg := filepath.Join(dir, "docker.io")
	leftover := filepath.Join(reg, ".hosts.toml.buildcache-0123456789abcdef.tmp")
	if err := os.WriteFile(leftover, []byte("half a fi"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(reg, "hosts.toml")
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	wg.Go(func() {
		for !stop.Load() {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("read during Apply: %v", err)
				return
			}
			var h hostsFile
			if err := toml.Unmarshal(b, &h); err != nil || len(h.Host) != 1 || h.Server != hub.Server {
				t.Errorf("a reader saw a partial file:\n%s", b)
				return
			}
			reads.Add(1)
		}
	})
	for i := range 200 {
		m := mirrorURL
		if i%2 == 0 {
			m = "http://127.0.0.1:5001"
		}
		if _, err := nodeconfig.Apply(dir, m, []nodeconfig.Registry{hub}); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads during 200 replacements", reads.Load())
	noTemps(t, reg)
}
