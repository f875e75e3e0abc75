package buildkit_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	contentlocal "github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/buildkit/client"
	solvererrdefs "github.com/moby/buildkit/solver/errdefs"

	"github.com/buildcache/buildcache/buildkit"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

// The tests below share one buildkitd (testserver.SharedBuildkitd) and
// run one after another: some prune its cache and count cached steps.
func TestMain(m *testing.M) {
	code := m.Run()
	testserver.StopSharedBuildkitd()
	os.Exit(code)
}

var bothPlatforms = []string{"linux/amd64", "linux/arm64"}

// daemon returns a client of the shared buildkitd.
func daemon(t *testing.T) (*testserver.Buildkitd, *client.Client) {
	t.Helper()
	d := testserver.SharedBuildkitd(t)
	return d, d.Client(t)
}

// buildCtx is a deadline for one build: arm64 runs under qemu on a
// noisy 2-CPU machine.
func buildCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// progress returns an option that records BuildKit's plain progress
// output and prints it if the test fails.
func progress(t *testing.T) buildkit.Option {
	t.Helper()
	var buf testserver.LockedBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("build progress:\n%s", buf.String())
		}
	})
	return buildkit.WithProgress(&buf, "plain")
}

// contextDir writes files into a fresh build context.
func contextDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// storeID names our store among the build's OCI stores.
const storeID = "basestore"

// baseInStore puts the two-platform test image into a new localfs store,
// with no registry involved, and returns the store and the image's
// per-platform manifest digests.
func baseInStore(t *testing.T) (*localfs.Store, map[string]v1.Hash) {
	t.Helper()
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ti := testimage.ForTest(t)
	idx := ti.Index(bothPlatforms...)
	ti.Store(store, idx)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	manifests := map[string]v1.Hash{}
	for _, d := range im.Manifests {
		manifests[d.Platform.OS+"/"+d.Platform.Architecture] = d.Digest
	}
	return store, manifests
}

// pinByPlatform builds by hand what PinBaseImages makes in NamedContexts
// mode: one named context per platform, keyed as the dockerfile frontend
// looks it up first ("context:<name>::<platform>"), each naming the
// platform's manifest in our store.
func pinByPlatform(t *testing.T, store *localfs.Store, image string, manifests map[string]v1.Hash, platforms ...string) *buildkit.Pinned {
	t.Helper()
	cs, err := contentlocal.NewStore(store.Dir())
	if err != nil {
		t.Fatal(err)
	}
	p := &buildkit.Pinned{
		FrontendAttrs: map[string]string{},
		OCIStores:     map[string]content.Store{storeID: cs},
		Platforms:     platforms,
	}
	for _, pl := range platforms {
		p.FrontendAttrs["context:"+image+"::"+pl] = "oci-layout://" + storeID + "@" + manifests[pl].String()
	}
	return p
}

// stepsNamed returns the steps whose names contain s.
func stepsNamed(res *buildkit.Result, s string) []buildkit.Step {
	var out []buildkit.Step
	for _, st := range res.Steps {
		if strings.Contains(st.Name, s) {
			out = append(out, st)
		}
	}
	return out
}

func TestBuildScratchTwoPlatforms(t *testing.T) {
	_, c := daemon(t)
	reg := testserver.StartRegistry(t)
	dir := contextDir(t, map[string]string{
		"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n",
		"hello.txt":  "hello from " + t.Name() + "\n",
	})
	tarPath := filepath.Join(t.TempDir(), "image.tar")
	pushed := reg.Host + "/scratch/app:v1"

	res, err := buildkit.Build(buildCtx(t), c, dir,
		buildkit.WithPlatforms(bothPlatforms...),
		buildkit.WithOutput(buildkit.OCITarball(tarPath), buildkit.PushImage(pushed)),
		progress(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(res.Manifests)); !slices.Equal(got, bothPlatforms) {
		t.Fatalf("Result.Manifests has platforms %v, want %v", got, bothPlatforms)
	}
	if res.Digest == (v1.Hash{}) {
		t.Error("Result.Digest is zero")
	}
	// Copying onto scratch is the same operation for both platforms:
	// BuildKit runs it once.
	if len(stepsNamed(res, "COPY hello.txt")) == 0 {
		t.Errorf("no COPY step among %v", stepNames(res))
	}

	// Read the tarball back with go-containerregistry, independently.
	idx, err := layout.ImageIndexFromPath(untar(t, tarPath))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != res.Digest {
		t.Fatalf("index.json lists %+v, want the one image %s", im.Manifests, res.Digest)
	}
	inner, err := idx.ImageIndex(res.Digest)
	if err != nil {
		t.Fatal(err)
	}
	fromTar := platformsOf(t, inner)
	if diff := cmp.Diff(res.Manifests, fromTar); diff != "" {
		t.Errorf("Result.Manifests vs the tarball (-result +tar):\n%s", diff)
	}

	// The pushed image is the same index.
	ref, err := name.ParseReference(pushed, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ridx, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("reading back the pushed image: %v", err)
	}
	if d, _ := ridx.Digest(); d != res.Digest {
		t.Errorf("pushed index is %s, the build said %s", d, res.Digest)
	}
	if diff := cmp.Diff(res.Manifests, platformsOf(t, ridx)); diff != "" {
		t.Errorf("Result.Manifests vs the registry (-result +registry):\n%s", diff)
	}
}

func TestBuildPushOnlyReadsManifestsFromRegistry(t *testing.T) {
	_, c := daemon(t)
	reg := testserver.StartRegistry(t)
	dir := contextDir(t, map[string]string{
		"Dockerfile": "FROM scratch\nCOPY a /a\n",
		"a":          t.Name(),
	})
	res, err := buildkit.Build(buildCtx(t), c, dir,
		buildkit.WithPlatforms("linux/amd64"),
		buildkit.WithOutput(buildkit.PushImage(reg.Host+"/single:v1")),
		progress(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Manifests) != 1 || res.Manifests["linux/amd64"] == (v1.Hash{}) {
		t.Errorf("Result.Manifests = %v, want linux/amd64 alone", res.Manifests)
	}
}

// TestBuildBaseFromStoreOnly builds FROM an image that only our localfs
// store holds: it was pushed to a registry, resolved into the store, and
// the registry was stopped before the build. A RUN step runs on both
// platforms (arm64 under qemu) and records the architecture it ran on.
func TestBuildBaseFromStoreOnly(t *testing.T) {
	testserver.RequireArm64Emulation(t)
	d, c := daemon(t)
	reg := testserver.StartRegistry(t)
	image := reg.Host + "/base/prog:v1"
	ti := testimage.ForTest(t)
	pushedDigest := ti.Push(image, ti.Index(bothPlatforms...))

	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := registry.NewResolver(store)
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := resolver.Resolve(context.Background(), image, cache.WithPlatforms(bothPlatforms...))
	if err != nil {
		t.Fatal(err)
	}
	if resolved.Digest != pushedDigest {
		t.Fatalf("resolved %s, pushed %s", resolved.Digest, pushedDigest)
	}
	reg.Stop() // from here on, the image exists only in the store

	// One named context for every platform, naming the index: the frontend
	// picks each platform's manifest from it. The key is the image as the
	// frontend normalizes it: the familiar reference, ":latest" trimmed.
	cs, err := contentlocal.NewStore(store.Dir())
	if err != nil {
		t.Fatal(err)
	}
	pinned := &buildkit.Pinned{
		FrontendAttrs: map[string]string{"context:" + image: "oci-layout://" + storeID + "@" + resolved.Digest.String()},
		OCIStores:     map[string]content.Store{storeID: cs},
	}
	dir := contextDir(t, map[string]string{
		"Dockerfile": "FROM " + image + "\nRUN [\"/prog\", \"arch\", \"/out/arch\"]\n",
	})
	out := t.TempDir()
	res, err := buildkit.Build(buildCtx(t), c, dir,
		buildkit.WithPlatforms(bothPlatforms...),
		buildkit.WithPinned(pinned),
		buildkit.WithOutput(buildkit.LocalDir(out)),
		progress(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range bothPlatforms {
		b, err := os.ReadFile(filepath.Join(out, strings.ReplaceAll(p, "/", "_"), "out", "arch"))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if got := strings.TrimSpace(string(b)); got != p {
			t.Errorf("the RUN step for %s ran as %s", p, got)
		}
	}
	if len(stepsNamed(res, "OCI load from client")) == 0 {
		t.Errorf("no step loaded the base image from the client's OCI store; steps: %v", stepNames(res))
	}
	if s := stepsNamed(res, "load metadata for "+image+":"); len(s) > 0 {
		t.Errorf("the daemon looked the image up by tag: %v", s)
	}

	// The same through PinBaseImages, with the registry still down: the
	// resolver answers from the store (stale-if-error) and pins each
	// platform's manifest.
	d.PruneAll(t)
	dockerfile, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	pinned, err = buildkit.PinBaseImages(context.Background(), dockerfile, resolver, store, buildkit.WithPlatforms(bothPlatforms...))
	if err != nil {
		t.Fatal(err)
	}
	if len(pinned.Images) != 2 {
		t.Fatalf("pinned %+v, want the image for 2 platforms", pinned.Images)
	}
	for _, im := range pinned.Images {
		if im.Source != cache.Stale || im.Digest != pushedDigest {
			t.Errorf("pinned %s for %s: source %v digest %s, want stale %s", im.Ref, im.Platform, im.Source, im.Digest, pushedDigest)
		}
	}
	out = t.TempDir()
	res, err = buildkit.Build(buildCtx(t), c, dir,
		buildkit.WithPinned(pinned),
		buildkit.WithOutput(buildkit.LocalDir(out)),
		progress(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range bothPlatforms {
		b, err := os.ReadFile(filepath.Join(out, strings.ReplaceAll(p, "/", "_"), "out", "arch"))
		if err != nil {
			t.Fatalf("PinBaseImages build, %s: %v", p, err)
		}
		if got := strings.TrimSpace(string(b)); got != p {
			t.Errorf("PinBaseImages build: the RUN step for %s ran as %s", p, got)
		}
	}
	if len(stepsNamed(res, "OCI load from client")) == 0 {
		t.Errorf("PinBaseImages build: no step loaded the base from the client's OCI store; steps: %v", stepNames(res))
	}
}

// TestBuildCacheRoundTrip exports the build cache, empties the daemon's
// cache, and builds again importing it: every Dockerfile step must come
// from the imported cache. Once for each place our caches live.
func TestBuildCacheRoundTrip(t *testing.T) {
	testserver.RequireArm64Emulation(t)
	d, c := daemon(t)

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, store *localfs.Store) (imports, exports []client.CacheOptionsEntry, check func(t *testing.T))
	}{
		{"localfs", func(t *testing.T, store *localfs.Store) ([]client.CacheOptionsEntry, []client.CacheOptionsEntry, func(*testing.T)) {
			// The same store that holds the base image.
			dir := store.Dir()
			return []client.CacheOptionsEntry{{Type: "local", Attrs: map[string]string{"src": dir}}},
				[]client.CacheOptionsEntry{{Type: "local", Attrs: map[string]string{"dest": dir, "mode": "max"}}},
				func(t *testing.T) {
					reopened, err := localfs.Open(dir)
					if err != nil {
						t.Fatal(err)
					}
					rep, err := reopened.Verify(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					if len(rep.Bad) > 0 || len(rep.Missing) > 0 || rep.Checked == 0 {
						t.Errorf("Verify after BuildKit wrote into the store: %+v", rep)
					}
				}
		}},
		{"registry", func(t *testing.T, _ *localfs.Store) ([]client.CacheOptionsEntry, []client.CacheOptionsEntry, func(*testing.T)) {
			reg := testserver.StartRegistry(t)
			attrs := map[string]string{"ref": reg.Host + "/cache/app:buildcache", "registry.insecure": "true"}
			exp := maps.Clone(attrs)
			exp["mode"] = "max"
			return []client.CacheOptionsEntry{{Type: "registry", Attrs: attrs}},
				[]client.CacheOptionsEntry{{Type: "registry", Attrs: exp}}, nil
		}},
		{"s3", func(t *testing.T, _ *localfs.Store) ([]client.CacheOptionsEntry, []client.CacheOptionsEntry, func(*testing.T)) {
			s3 := testserver.StartS3(t)
			bucket := s3.NewBucket(t)
			imports, exports := s3CacheEntries(s3, bucket)
			return imports, exports,
				func(t *testing.T) {
					objs, err := os.ReadDir(filepath.Join(s3.Dir(), bucket, "buildkit", "blobs"))
					if err != nil || len(objs) == 0 {
						t.Errorf("no cache blobs in the bucket: %v", err)
					}
				}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, manifests := baseInStore(t)
			const image = "base.invalid/prog:1" // no such registry: only the store has it
			pinned := pinByPlatform(t, store, image, manifests, bothPlatforms...)
			imports, exports, check := tc.setup(t, store)
			dir := contextDir(t, map[string]string{
				// Content unique to the subtest: no cache of another one applies.
				"msg": t.Name() + time.Now().String(),
				"Dockerfile": "FROM " + image + "\n" +
					"COPY msg /msg\n" +
					"RUN [\"/prog\", \"arch\", \"/out/arch\"]\n",
			})
			build := func(opts ...buildkit.Option) *buildkit.Result {
				t.Helper()
				opts = append(opts, buildkit.WithPinned(pinned), buildkit.WithOutput(buildkit.LocalDir(t.TempDir())), progress(t))
				res, err := buildkit.Build(buildCtx(t), c, dir, opts...)
				if err != nil {
					t.Fatal(err)
				}
				return res
			}

			d.PruneAll(t)
			first := build(buildkit.WithCache(nil, exports))
			if n := len(cachedOf(stepsNamed(first, "] RUN "))); n != 0 {
				t.Fatalf("first build: %d RUN steps cached on an empty daemon", n)
			}
			if check != nil {
				check(t)
			}

			d.PruneAll(t)
			second := build(buildkit.WithCache(imports, nil))
			dockerfileSteps := requireCached(t, "second build", second)
			if second.Cached < len(dockerfileSteps) || second.Cached > second.Total {
				t.Errorf("second build: Cached=%d Total=%d", second.Cached, second.Total)
			}
			t.Logf("second build: %d of %d steps cached: %q", second.Cached, second.Total, second.CachedSteps())
		})
	}
}

func TestBuildFailingStepIsNamed(t *testing.T) {
	_, c := daemon(t)
	store, manifests := baseInStore(t)
	const image = "base.invalid/prog:1"
	pinned := pinByPlatform(t, store, image, manifests, "linux/amd64")
	dir := contextDir(t, map[string]string{
		"Dockerfile": "FROM " + image + "\nRUN [\"/prog\", \"fail\"]\n",
	})
	_, err := buildkit.Build(buildCtx(t), c, dir, buildkit.WithPinned(pinned), progress(t))
	if err == nil {
		t.Fatal("a failing RUN step built")
	}
	var se *buildkit.StepError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *StepError", err, err)
	}
	t.Logf("error: %v", err)
	// A single-platform build names steps "[1/2] RUN ...", without the
	// platform.
	if !strings.Contains(se.Step, `RUN ["/prog", "fail"]`) {
		t.Errorf("Step = %q, want the RUN step", se.Step)
	}
	if se.ExitCode != 3 {
		t.Errorf("ExitCode = %d, want 3", se.ExitCode)
	}
	if se.Source != "Dockerfile:2" {
		t.Errorf("Source = %q, want Dockerfile:2", se.Source)
	}
	if !bytes.Contains(se.Log, []byte("failing as asked")) {
		t.Errorf("Log = %q, want the program's stderr", se.Log)
	}
	if !strings.Contains(err.Error(), se.Step) {
		t.Errorf("the message %q does not name the step", err)
	}
	var ve *solvererrdefs.VertexError
	if !errors.As(err, &ve) || ve.Digest != se.Vertex.String() {
		t.Errorf("BuildKit's VertexError is not in the chain (or names another vertex): %v", ve)
	}
}

func TestBuildDockerfileErrorHasLine(t *testing.T) {
	_, c := daemon(t)
	dir := contextDir(t, map[string]string{"Dockerfile": "FROM scratch\nBOGUS x\n"})
	_, err := buildkit.Build(buildCtx(t), c, dir, progress(t))
	if err == nil {
		t.Fatal("an invalid Dockerfile built")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "Dockerfile:2") {
		t.Errorf("error %q does not say which line", err)
	}
}

func TestBuildOptionErrors(t *testing.T) {
	c, err := client.New(context.Background(), "unix:///nonexistent/buildkitd.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := contextDir(t, map[string]string{"Dockerfile": "FROM scratch\n"})
	for _, tc := range []struct {
		name string
		opts []buildkit.Option
		want string
	}{
		{"progress mode", []buildkit.Option{buildkit.WithProgress(io.Discard, "fancy")}, "unknown mode"},
		{"platform not pinned", []buildkit.Option{
			buildkit.WithPlatforms("linux/arm64"),
			buildkit.WithPinned(&buildkit.Pinned{Platforms: []string{"linux/amd64"}}),
		}, "pinned for linux/amd64 only"},
		{"two rewritten Dockerfiles", []buildkit.Option{
			buildkit.WithDockerfileBytes([]byte("FROM scratch\n")),
			buildkit.WithPinned(&buildkit.Pinned{Mode: buildkit.RewriteFrom, Dockerfile: []byte("FROM scratch\n")}),
		}, "WithDockerfileBytes"},
		{"missing Dockerfile", []buildkit.Option{buildkit.WithDockerfile("nope.Dockerfile")}, "nope.Dockerfile"},
		{"conflicting attribute", []buildkit.Option{
			buildkit.WithFrontendAttr("context:alpine", "docker-image://alpine:3"),
			buildkit.WithPinned(&buildkit.Pinned{FrontendAttrs: map[string]string{"context:alpine": "oci-layout://x@sha256:" + strings.Repeat("0", 64)}}),
		}, "context:alpine"},
		{"zero output", []buildkit.Option{buildkit.WithOutput(buildkit.Output{})}, "zero Output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := buildkit.Build(context.Background(), c, dir, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func cachedOf(steps []buildkit.Step) []buildkit.Step {
	var out []buildkit.Step
	for _, s := range steps {
		if s.Cached {
			out = append(out, s)
		}
	}
	return out
}

func stepNames(res *buildkit.Result) []string {
	var out []string
	for _, s := range res.Steps {
		out = append(out, fmt.Sprintf("%s (cached=%v)", s.Name, s.Cached))
	}
	return out
}

// platformsOf maps each manifest of idx to its platform.
func platformsOf(t *testing.T, idx v1.ImageIndex) map[string]v1.Hash {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]v1.Hash{}
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		out[d.Platform.OS+"/"+d.Platform.Architecture] = d.Digest
	}
	return out
}

// untar extracts an OCI layout tarball into a temp dir.
func untar(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("tar entry %q escapes", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// requireCached checks that the COPY and RUN steps of the round-trip
// Dockerfile, for both platforms, came from the cache, and returns them.
func requireCached(t *testing.T, what string, res *buildkit.Result) []buildkit.Step {
	t.Helper()
	var steps []buildkit.Step
	for _, kind := range []string{"] COPY msg", "] RUN "} {
		steps = append(steps, stepsNamed(res, kind)...)
	}
	if len(steps) != 4 {
		t.Fatalf("%s: want COPY and RUN for two platforms, got %v", what, stepNames(res))
	}
	for _, st := range steps {
		if !st.Cached {
			t.Errorf("%s: step %q was not cached", what, st.Name)
		}
	}
	return steps
}
