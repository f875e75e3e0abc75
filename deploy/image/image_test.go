package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	contentlocal "github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/tonistiigi/fsutil"

	"github.com/buildcache/buildcache/internal/testserver"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testserver.StopSharedBuildkitd()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// testOptions are the options every build of the tests uses: fixed, so
// that two builds must agree.
func testOptions(t *testing.T) Options {
	t.Helper()
	mod, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		ModuleDir: mod,
		Version:   "v0.0.0-test",
		Revision:  "0123456789abcdef0123456789abcdef01234567",
		Licenses:  "NOASSERTION",
		Created:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		// The release's level 9 costs minutes of CPU under the race
		// detector; what the tests check does not depend on the level.
		CompressionLevel: gzip.BestSpeed,
	}
}

// built is the image the tests share, built once (two go builds) and
// written to an OCI layout.
var built struct {
	once sync.Once
	dir  string // the layout
	idx  v1.ImageIndex
	err  error
}

func builtImage(t *testing.T) (v1.ImageIndex, string) {
	t.Helper()
	built.once.Do(func() {
		ctx := context.Background()
		built.idx, built.err = Build(ctx, testOptions(t))
		if built.err != nil {
			return
		}
		built.dir, built.err = os.MkdirTemp("", "buildcache-image-layout-")
		if built.err != nil {
			return
		}
		built.err = WriteLayout(built.dir, built.idx, "v0.0.0-test")
	})
	if built.err != nil {
		t.Fatalf("building the image: %v", built.err)
	}
	return built.idx, built.dir
}

// TestImageReproducible builds the image a second time from the same
// source and options, binaries included, and wants the same index digest.
func TestImageReproducible(t *testing.T) {
	idx, _ := builtImage(t)
	again := must(Build(context.Background(), testOptions(t)))(t)
	d1, d2 := must(idx.Digest())(t), must(again.Digest())(t)
	if d1 != d2 {
		m1, _ := idx.RawManifest()
		m2, _ := again.RawManifest()
		t.Fatalf("two builds of the same source: %s and %s\n%s\n%s", d1, d2, m1, m2)
	}
	t.Logf("two builds, one digest: %s", d1)
}

// must(f())(t) is f's value, the test failed on f's error: for the steps
// a test cannot go on without.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestImagePublish writes the image to an OCI layout and pushes it to a
// registry, and reads both back with the same digest.
func TestImagePublish(t *testing.T) {
	idx, _ := builtImage(t)
	want := must(idx.Digest())(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/buildcache:v0.0.0-test"
	dir := filepath.Join(t.TempDir(), "layout")
	if err := publish(context.Background(), idx, dir, "v0.0.0-test", ref); err != nil {
		t.Fatal(err)
	}
	lp := must(layout.FromPath(dir))(t)
	im := must(must(lp.ImageIndex())(t).IndexManifest())(t)
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != want || im.Manifests[0].Annotations[annRefName] != "v0.0.0-test" {
		t.Errorf("layout index.json %+v, want %s named v0.0.0-test", im.Manifests, want)
	}
	desc := must(remote.Head(must(name.ParseReference(ref))(t)))(t)
	if desc.Digest != want || desc.MediaType != types.OCIImageIndex {
		t.Errorf("pushed %s %s, want %s %s", desc.MediaType, desc.Digest, types.OCIImageIndex, want)
	}
	// An existing layout is replaced; another non-empty directory is not.
	if err := WriteLayout(dir, idx, "again"); err != nil {
		t.Errorf("replacing the layout: %v", err)
	}
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "keep"), nil, 0o644)
	if err := WriteLayout(other, idx, "x"); err == nil {
		t.Errorf("WriteLayout replaced a directory that held no layout")
	}
}

// TestImageContents checks every platform's image: annotations, config
// (non-root user, entry point), and its one layer — sorted entries with
// fixed times and owners, the CA bundle, and a static binary of the right
// architecture.
func TestImageContents(t *testing.T) {
	idx, _ := builtImage(t)
	o := testOptions(t)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %s", im.MediaType)
	}
	wantAnn := map[string]string{
		annSource:   DefaultSource,
		annVersion:  "v0.0.0-test",
		annRevision: o.Revision,
		annLicenses: "NOASSERTION",
		annCreated:  "2026-01-02T03:04:05Z",
	}
	checkAnnotations(t, "index", im.Annotations, wantAnn)
	hostCerts, err := os.ReadFile(DefaultCACerts)
	if err != nil {
		t.Fatal(err)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	var got []string
	for _, desc := range im.Manifests {
		p := desc.Platform
		if p == nil {
			t.Fatalf("manifest %s has no platform", desc.Digest)
		}
		got = append(got, p.String())
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		checkAnnotations(t, p.String()+" manifest", m.Annotations, wantAnn)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != p.Architecture {
			t.Errorf("%s: config says %s/%s", p, cf.OS, cf.Architecture)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", p, cf.Config.User)
		}
		if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != binaryPath {
			t.Errorf("%s: entry point %q", p, cf.Config.Entrypoint)
		}
		if !cf.Created.Time.Equal(o.Created) {
			t.Errorf("%s: created %s, want %s", p, cf.Created.Time, o.Created)
		}
		checkAnnotations(t, p.String()+" labels", cf.Config.Labels, wantAnn)
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(layers) != 1 {
			t.Fatalf("%s: %d layers, want 1 (an empty base)", p, len(layers))
		}
		size, _ := layers[0].Size()
		files := readLayer(t, p.String(), layers[0], o.Created)
		bin := files[strings.TrimPrefix(binaryPath, "/")]
		t.Logf("%s: layer %.1f MiB compressed, binary %.1f MiB", p, float64(size)/(1<<20), float64(len(bin))/(1<<20))
		if !bytes.Equal(files[strings.TrimPrefix(caCertsPath, "/")], hostCerts) {
			t.Errorf("%s: %s is not the build machine's %s", p, caCertsPath, DefaultCACerts)
		}
		if !strings.Contains(string(files["etc/passwd"]), "nonroot:x:65532:65532:") {
			t.Errorf("%s: /etc/passwd names no user 65532: %q", p, files["etc/passwd"])
		}
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s: %s is not an ELF file: %v", p, binaryPath, err)
		}
		if f.Machine != machines[p.Architecture] || f.Class != elf.ELFCLASS64 {
			t.Errorf("%s: binary is %s %s, want %s", p, f.Class, f.Machine, machines[p.Architecture])
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s: binary has an interpreter: not static", p)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s: binary needs %q: not static", p, libs)
		}
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("platforms %v, want linux/amd64 and linux/arm64", got)
	}
}

func checkAnnotations(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got[k], v)
		}
	}
}

// readLayer returns the regular files of a layer by name and checks its
// entries: sorted, every time the epoch, owners root or 65532 by number
// only.
func readLayer(t *testing.T, what string, l v1.Layer, epoch time.Time) map[string][]byte {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(rc)
	prev := ""
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name <= prev {
			t.Errorf("%s: tar entry %q after %q: not sorted", what, h.Name, prev)
		}
		prev = h.Name
		if !h.ModTime.Equal(epoch) || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: %s: times %s %s %s, want only the epoch %s", what, h.Name, h.ModTime, h.AccessTime, h.ChangeTime, epoch)
		}
		if (h.Uid != 0 && h.Uid != uid) || h.Gid != h.Uid || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: %s: owner %d:%d (%q:%q)", what, h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
	return files
}

// TestImageRuns runs the image under runc through buildkitd, as a
// runtime runs it: its config's user, working directory and environment,
// a read-only root file system, the entry point. `buildcache --version`
// answers on every platform (arm64 under qemu), and `buildcache serve`
// answers /healthz, /readyz and /v2/ and exits 0 on SIGTERM, checked
// from inside the container by a probe (there is no shell or curl in the
// image).
func TestImageRuns(t *testing.T) {
	idx, dir := builtImage(t)
	bk := testserver.SharedBuildkitd(t)
	c := bk.Client(t)
	store, err := contentlocal.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	probeDir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(probeDir, "probe"), "./internal/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, b)
	}

	platforms := []string{"linux/" + runtime.GOARCH}
	if runtime.GOARCH == "amd64" {
		platforms = append(platforms, "linux/arm64")
	}
	for _, p := range platforms {
		t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
			if p == "linux/arm64" && runtime.GOARCH != "arm64" {
				testserver.RequireArm64Emulation(t)
			}
			plat, err := v1.ParsePlatform(p)
			if err != nil {
				t.Fatal(err)
			}
			img, err := platformOf(idx, *plat)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			base := llb.OCILayout("docker.io/library/buildcache@"+d.String(), llb.OCIStore("", "buildcache"), llb.Platform(ocispecPlatform(*plat)))
			logs := solve(t, c, store, nil, runStep(base, cf, "buildcache --version", cf.Config.Entrypoint, "--version"), *plat)
			t.Logf("%s: buildcache --version: %q", p, logs)
			if want := "buildcache v0.0.0-test\n"; !strings.Contains(logs, want) {
				t.Errorf("%s: buildcache --version printed %q, want %q", p, logs, want)
			}
			if p != "linux/"+runtime.GOARCH {
				return
			}
			args := append([]string{"/probe/probe"}, cf.Config.Entrypoint...)
			args = append(args, "serve", "--listen", "127.0.0.1:0", "--upstream", "docker.io=http://127.0.0.1:9",
				"--cache", "/cache", "--shutdown-timeout", "5s")
			local := map[string]fsutil.FS{}
			if local["probe"], err = fsutil.NewFS(probeDir); err != nil {
				t.Fatal(err)
			}
			logs = solve(t, c, store, local, runStep(base, cf, "buildcache serve, probed", args[:1], args[1:]...), *plat)
			t.Logf("%s: the probe, inside the container:\n%s", p, logs)
			for _, want := range []string{
				"probe: uid=65532 gid=65532",
				"probe: GET /healthz: 200",
				"probe: GET /readyz: 200",
				"probe: GET /v2/: 200",
				"probe: serve exited 0 after SIGTERM",
				"probe: ok",
			} {
				if !strings.Contains(logs, want) {
					t.Errorf("%s: the probe's output has no %q:\n%s", p, want, logs)
				}
			}
		})
	}
}

// runStep is a RUN step of args as the image's config says a runtime runs
// it, on a read-only root with /tmp and /cache writable by the user.
func runStep(base llb.State, cf *v1.ConfigFile, name string, cmd []string, args ...string) llb.State {
	opts := []llb.RunOption{
		llb.Args(append(append([]string{}, cmd...), args...)),
		llb.User(cf.Config.User),
		llb.Dir(cf.Config.WorkingDir),
		llb.ReadonlyRootFS(),
		llb.IgnoreCache,
		llb.WithCustomName(name),
		llb.AddMount("/tmp", llb.Scratch(), llb.Tmpfs()),
		llb.AddMount("/probe", llb.Local("probe"), llb.Readonly),
	}
	for _, e := range cf.Config.Env {
		k, v, _ := strings.Cut(e, "=")
		opts = append(opts, llb.AddEnv(k, v))
	}
	cacheDir := llb.Scratch().File(llb.Mkdir("/cache", 0o700, llb.WithUIDGID(uid, gid)))
	return base.Run(opts...).AddMount("/cache", cacheDir, llb.SourcePath("/cache"))
}

// solve runs st and returns what its steps printed.
func solve(t *testing.T, c *client.Client, store content.Store, local map[string]fsutil.FS, st llb.State, plat v1.Platform) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	def, err := st.Marshal(ctx, llb.Platform(ocispecPlatform(plat)))
	if err != nil {
		t.Fatal(err)
	}
	if local == nil {
		empty, err := fsutil.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		local = map[string]fsutil.FS{"probe": empty}
	}
	ch := make(chan *client.SolveStatus)
	var logs bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := range ch {
			for _, l := range s.Logs {
				logs.Write(l.Data)
			}
		}
	}()
	_, err = c.Solve(ctx, def, client.SolveOpt{
		LocalMounts: local,
		OCIStores:   map[string]content.Store{"buildcache": store},
	}, ch)
	<-done
	if err != nil {
		t.Fatalf("%s: %v\n%s", plat, err, logs.String())
	}
	return logs.String()
}

func platformOf(idx v1.ImageIndex, p v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Satisfies(p) {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no %s image in the index", p)
}

func ocispecPlatform(p v1.Platform) ocispecs.Platform {
	return ocispecs.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

// A level gzip does not have is refused before anything is built.
func TestBuildRefusesCompressionLevel(t *testing.T) {
	for _, level := range []int{-1, 10} {
		o := testOptions(t)
		o.CompressionLevel = level
		_, err := Build(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("compression level %d", level)) {
			t.Errorf("level %d: %v, want an error naming the level", level, err)
		}
	}
}
