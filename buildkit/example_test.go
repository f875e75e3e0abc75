package buildkit_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/client"

	"github.com/buildcache/buildcache/buildkit"
	"github.com/buildcache/buildcache/buildkit/cacheentry"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

// pushBase starts a registry on loopback holding a small two-platform
// image and returns its reference and a function that stops the registry.
func pushBase() (string, func()) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	ref := strings.TrimPrefix(srv.URL, "http://") + "/library/base:1"
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte("rootfs for "+arch), types.OCILayer))
		if err != nil {
			panic(err)
		}
		cf, _ := img.ConfigFile()
		cf.OS, cf.Architecture = "linux", arch
		img, _ = mutate.ConfigFile(img, cf)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	tag, _ := name.ParseReference(ref)
	if err := remote.WriteIndex(tag, mutate.AppendManifests(empty.Index, adds...)); err != nil {
		panic(err)
	}
	return ref, srv.Close
}

func ExamplePinBaseImages() {
	ref, stop := pushBase()
	defer stop()
	dir, _ := os.MkdirTemp("", "buildcache")
	defer os.RemoveAll(dir)
	store, _ := localfs.Open(dir)
	defer store.Close()
	resolver, _ := registry.NewResolver(store)

	dockerfile := "ARG BASE=" + ref + `
FROM --platform=$BUILDPLATFORM ${BASE} AS build
RUN make
FROM ${BASE}
COPY --from=build /out /bin/app
`
	pinned, err := buildkit.PinBaseImages(context.Background(), []byte(dockerfile), resolver, store,
		buildkit.WithPlatforms("linux/amd64", "linux/arm64"), buildkit.WithBuildPlatform("linux/amd64"))
	if err != nil {
		panic(err)
	}
	for _, img := range pinned.Images {
		fmt.Printf("%s %s for stages %v\n", img.Platform, img.Source, img.Stages)
	}
	host := strings.TrimSuffix(ref, "/library/base:1")
	for _, k := range slices.Sorted(maps.Keys(pinned.FrontendAttrs)) {
		v := pinned.FrontendAttrs[k]
		fmt.Printf("%s = %s...\n", strings.ReplaceAll(k, host, "<registry>"), v[:len("oci-layout://buildcache@sha256:")])
	}
	// A build takes them in its client.SolveOpt, with
	// FrontendAttrs["platform"] = "linux/amd64,linux/arm64":
	//   maps.Copy(opt.FrontendAttrs, pinned.FrontendAttrs)
	//   opt.OCIStores = pinned.OCIStores
	fmt.Println(slices.Collect(maps.Keys(pinned.OCIStores)))
	// Output:
	// linux/amd64 pulled for stages [build 1]
	// linux/arm64 pulled for stages [1]
	// context:<registry>/library/base:1::linux/amd64 = oci-layout://buildcache@sha256:...
	// context:<registry>/library/base:1::linux/arm64 = oci-layout://buildcache@sha256:...
	// [buildcache]
}

func ExamplePinBaseImages_rewriteFrom() {
	ref, stop := pushBase()
	defer stop()
	dir, _ := os.MkdirTemp("", "buildcache")
	defer os.RemoveAll(dir)
	store, _ := localfs.Open(dir)
	defer store.Close()
	resolver, _ := registry.NewResolver(store)

	dockerfile := "FROM " + ref + " AS base\nCOPY --from=" + ref + " /etc /etc\n"
	pinned, err := buildkit.PinBaseImages(context.Background(), []byte(dockerfile), resolver, nil,
		buildkit.WithMode(buildkit.RewriteFrom), buildkit.WithPlatforms("linux/amd64", "linux/arm64"))
	if err != nil {
		panic(err)
	}
	fmt.Print(strings.ReplaceAll(string(pinned.Dockerfile), strings.TrimSuffix(ref, "/library/base:1"), "<registry>"))
	// Output:
	// FROM <registry>/library/base:1@sha256:d6cb815d91af7f42f3358ce45621f643ce7b288376b6886e02ab26422b56e4b7 AS base
	// COPY --from=<registry>/library/base:1@sha256:d6cb815d91af7f42f3358ce45621f643ce7b288376b6886e02ab26422b56e4b7 /etc /etc
}

// Build needs a running buildkitd: this example is compiled, not run.
func ExampleBuild() {
	ctx := context.Background()
	c, err := client.New(ctx, "unix:///run/buildkit/buildkitd.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	store, err := localfs.Open("/var/cache/buildcache")
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	resolver, err := registry.NewResolver(store)
	if err != nil {
		log.Fatal(err)
	}
	dockerfile, err := os.ReadFile("app/Dockerfile")
	if err != nil {
		log.Fatal(err)
	}

	// One option list describes the build for both calls.
	opts := []buildkit.Option{buildkit.WithPlatforms("linux/amd64", "linux/arm64"), buildkit.WithTarget("app")}
	// Base images from the store, pinned by digest: BuildKit asks no
	// registry for them.
	pinned, err := buildkit.PinBaseImages(ctx, dockerfile, resolver, store, opts...)
	if err != nil {
		log.Fatal(err)
	}
	// BuildKit's own cache in the same store directory.
	entries, err := cacheentry.For(store)
	if err != nil {
		log.Fatal(err)
	}
	res, err := buildkit.Build(ctx, c, "app", append(opts,
		buildkit.WithPinned(pinned),
		buildkit.WithCache(entries.Imports, entries.Exports),
		buildkit.WithOutput(buildkit.OCITarball("app.tar")))...)
	if err != nil {
		log.Fatal(err) // a *buildkit.StepError names the failing step
	}
	fmt.Printf("%s: %d of %d steps cached\n", res.Digest, res.Cached, res.Total)
	for platform, m := range res.Manifests {
		fmt.Println(platform, m)
	}
}
