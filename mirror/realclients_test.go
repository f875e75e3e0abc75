package mirror_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildcache/buildcache/buildkit"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
)

// The tests below pull through the mirror with real clients, as a daemon
// configured with a registry mirror does, from a real docker-registry
// upstream holding a two-platform image of the /prog program
// (internal/testimage); then again with that upstream stopped, served
// from the mirror's store alone.

// realUpstream starts a registry holding base:v1 and returns it with the
// image's reference.
func realUpstream(t *testing.T) (*testserver.Registry, string) {
	t.Helper()
	reg := testserver.StartRegistry(t)
	ref := reg.Host + "/base:v1"
	ti := testimage.ForTest(t)
	ti.Push(ref, ti.Index(platforms...))
	return reg, ref
}

// writeHostsToml writes containerd's hosts.toml for upstream: its
// server, and the mirror as the host asked first for pulls and tag
// resolution, both plain HTTP.
func writeHostsToml(t *testing.T, upstream, mirrorHost string) string {
	t.Helper()
	dir := t.TempDir()
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
		"http://"+upstream, "http://"+mirrorHost)
	if err := os.MkdirAll(filepath.Join(dir, upstream), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, upstream, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestContainerdPullThroughMirror pulls with containerd's ctr through a
// hosts.toml mirror: both platforms' content into a containerd of its
// own (fresh for each pull, so that its content store hides nothing).
func TestContainerdPullThroughMirror(t *testing.T) {
	reg, ref := realUpstream(t)
	m := startLocalMirror(t, reg.Host)
	hosts := writeHostsToml(t, reg.Host, m.host())

	pull := func(what string) {
		t.Helper()
		c := testserver.StartContainerd(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// --all-platforms fetches every platform's manifest and layers;
		// the native snapshotter unpacks without mounts.
		if _, err := c.Ctr(ctx, "images", "pull", "--plain-http", "--hosts-dir", hosts,
			"--all-platforms", "--snapshotter", "native", ref); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		out, err := c.Ctr(ctx, "images", "ls", "--quiet")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, ref) {
			t.Fatalf("%s: ctr images ls lacks %s:\n%s", what, ref, out)
		}
		c.Stop()
	}

	pull("cold pull")
	served := m.clientCounts()
	t.Logf("cold pull: ctr asked the mirror %v", served)
	// Two platforms: the index, two manifests, two configs, two layers.
	if served["GET manifests"] < 3 || served["GET blobs"] < 4 {
		t.Fatalf("cold pull: the mirror served %v, want the index, both manifests and every blob", served)
	}
	if !m.nsSeen.Load() {
		t.Error("ctr sent no ?ns= query to the mirror")
	}
	if n := m.upstream.counts(); n["GET blobs"] == 0 {
		t.Fatalf("cold pull: the mirror fetched no blob upstream (%v)", n)
	}

	reg.Stop()
	pull("pull with the upstream stopped")
	if served := m.clientCounts(); served["GET blobs"] < 4 {
		t.Fatalf("stale pull: the mirror served %v, want every blob", served)
	}
	if n := m.upstream.counts(); n["GET blobs"] != 0 || n["GET manifests"] > 1 {
		t.Errorf("stale pull: the mirror asked upstream %v, want at most the tag's revalidation", n)
	}
}

// TestBuildKitBuildThroughMirror builds a two-platform image FROM the
// upstream's base image with buildkitd configured to use the mirror for
// that registry; then again with the upstream stopped, on a fresh
// buildkitd (its own state: no build cache or resolved metadata hides
// the mirror).
func TestBuildKitBuildThroughMirror(t *testing.T) {
	testserver.RequireArm64Emulation(t)
	reg, ref := realUpstream(t)
	m := startLocalMirror(t, reg.Host)
	config := fmt.Sprintf(`[registry.%q]
  mirrors = [%q]
  http = true
  insecure = true

[registry.%q]
  http = true
  insecure = true
`, reg.Host, m.host(), m.host())
	dir := t.TempDir()
	dockerfile := "FROM " + ref + "\nRUN [\"/prog\", \"arch\", \"/out/arch\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}

	build := func(what string) {
		t.Helper()
		d := testserver.StartBuildkitdWithConfig(t, config)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var progress testserver.LockedBuffer
		out := t.TempDir()
		_, err := buildkit.Build(ctx, d.Client(t), dir,
			buildkit.WithPlatforms(platforms...),
			buildkit.WithOutput(buildkit.LocalDir(out)),
			buildkit.WithProgress(&progress, "plain"))
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, progress.String())
		}
		for _, p := range platforms {
			b, err := os.ReadFile(filepath.Join(out, strings.ReplaceAll(p, "/", "_"), "out", "arch"))
			if err != nil {
				t.Fatalf("%s: %s: %v", what, p, err)
			}
			if got := strings.TrimSpace(string(b)); got != p {
				t.Errorf("%s: the RUN step for %s ran as %s", what, p, got)
			}
		}
		d.Stop()
	}

	build("cold build")
	served := m.clientCounts()
	t.Logf("cold build: buildkitd asked the mirror %v", served)
	if served["GET manifests"] < 3 || served["GET blobs"] < 4 {
		t.Fatalf("cold build: the mirror served %v, want the index, both manifests and every blob", served)
	}
	if n := m.upstream.counts(); n["GET blobs"] == 0 {
		t.Fatalf("cold build: the mirror fetched no blob upstream (%v)", n)
	}

	reg.Stop()
	build("build with the upstream stopped")
	if served := m.clientCounts(); served["GET blobs"] < 4 {
		t.Fatalf("stale build: the mirror served %v, want every blob", served)
	}
	if n := m.upstream.counts(); n["GET blobs"] != 0 {
		t.Errorf("stale build: the mirror asked upstream %v, want no blob", n)
	}
}
