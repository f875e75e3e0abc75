package buildkit

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/buildcache/buildcache/cache"
)

func TestOptionsRejectBadValues(t *testing.T) {
	for name, opt := range map[string]Option{
		"no platforms":       WithPlatforms(),
		"bad platform":       WithPlatforms("linux/amd64", "!"),
		"bad build platform": WithBuildPlatform("linux/!"),
		"bad mode":           WithMode(PinMode(7)),
		"empty target":       WithTarget(""),
		"upper-case store":   WithStoreID("Store"),
		"store with digest":  WithStoreID("a@sha256:" + strings.Repeat("0", 64)),
		"bad resolve option": WithResolveOptions(cache.WithMaxAge(-1)),
		"empty Dockerfile":   WithDockerfile(""),
		"nil Option":         nil,
	} {
		if _, err := makeOptions([]Option{opt}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	f := &fakeResolver{store: newStore(t)}
	p, err := PinBaseImages(context.Background(), []byte("FROM alpine\n"), f, f.store, WithStoreID("my-store"), WithBuildPlatform(amd64))
	if err != nil {
		t.Fatal(err)
	}
	if p.OCIStores["my-store"] == nil || !strings.HasPrefix(p.FrontendAttrs["context:alpine::linux/amd64"], "oci-layout://my-store@sha256:") {
		t.Errorf("WithStoreID not used: %v %v", p.OCIStores, p.FrontendAttrs)
	}
}

// TestOneOptionListServesBothCalls: the options describing the build are
// written once; PinBaseImages ignores Build's options and Build ignores
// PinBaseImages', and both read the shared ones alike.
func TestOneOptionListServesBothCalls(t *testing.T) {
	f := &fakeResolver{store: newStore(t)}
	opts := []Option{
		WithPlatforms(amd64, arm64), WithBuildArgs(map[string]string{"BASE": "alpine:3.20"}),
		WithTarget("app"), WithDockerfile("build/Dockerfile.prod"),
		// PinBaseImages only.
		WithBuildPlatform(amd64), WithResolveOptions(cache.WithPolicy(cache.PullIfNotPresent)), WithStoreID("my-store"),
		// Build only.
		WithOutput(LocalDir(t.TempDir())), WithProgress(io.Discard, "quiet"), WithoutDockerAuth(),
		WithFrontendAttr("no-cache", ""),
	}
	df := "ARG BASE\nFROM ${BASE} AS app\nFROM scratch AS other\n"
	pinned, err := PinBaseImages(context.Background(), []byte(df), f, f.store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string][]string{"alpine:3.20": {amd64, arm64}}, f.resolved(t)); diff != "" {
		t.Errorf("resolved (-want +got):\n%s", diff)
	}
	if _, err := PinBaseImages(context.Background(), []byte("FROM $NOPE\n"), f, f.store, opts...); err == nil || !strings.HasPrefix(err.Error(), "build/Dockerfile.prod:1: ") {
		t.Errorf("error %v does not name the WithDockerfile file", err)
	}

	dir := t.TempDir()
	o, err := makeOptions(append(opts, WithPinned(pinned), WithDockerfileBytes([]byte(df))))
	if err != nil {
		t.Fatal(err)
	}
	run := &buildRun{options: o}
	if err := run.choosePlatforms(); err != nil {
		t.Fatal(err)
	}
	solveOpt, cleanup, err := run.solveOpt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	a := solveOpt.FrontendAttrs
	for k, want := range map[string]string{
		"platform": "linux/amd64,linux/arm64", "target": "app", "build-arg:BASE": "alpine:3.20",
		"filename": "Dockerfile.prod", "no-cache": "",
		"context:alpine:3.20::linux/arm64": pinned.FrontendAttrs["context:alpine:3.20::linux/arm64"],
	} {
		if got, ok := a[k]; !ok || got != want {
			t.Errorf("frontend attribute %q = %q, want %q", k, got, want)
		}
	}
	if solveOpt.OCIStores["my-store"] == nil {
		t.Errorf("OCI stores %v, want the pinned my-store", solveOpt.OCIStores)
	}
}
