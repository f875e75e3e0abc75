package buildkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

func init() {
	// containerd's local content store warns on every open that the file
	// system has no fs-verity: noise in test output. (A test binary may
	// set this global; the package never does.)
	_ = log.SetLevel("error")
}

// fakeResolver resolves any reference to made-up images, one manifest per
// platform asked for, whose blobs it writes into store (if set) as a real
// resolver would. It records every call.
type fakeResolver struct {
	store *localfs.Store
	fail  map[string]error    // ref -> error to return
	only  map[string][]string // ref -> the platforms the image has
	mu    sync.Mutex
	calls []fakeCall
}

type fakeCall struct {
	ref  string
	opts cache.ResolveOptions
}

func (f *fakeResolver) Resolve(ctx context.Context, ref string, opts ...cache.ResolveOption) (*cache.ResolvedImage, error) {
	ro, err := cache.MakeResolveOptions(opts...)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.calls = append(f.calls, fakeCall{ref: ref, opts: ro})
	f.mu.Unlock()
	if err := f.fail[ref]; err != nil {
		return nil, err
	}
	res := &cache.ResolvedImage{Ref: ref, Manifests: map[string]v1.Hash{}, Source: cache.Pulled}
	var index v1.IndexManifest
	index.SchemaVersion, index.MediaType = 2, types.OCIImageIndex
	for _, p := range ro.Platforms {
		if only, ok := f.only[ref]; ok && !slices.Contains(only, p) {
			continue
		}
		desc, err := f.image(ctx, ref, p)
		if err != nil {
			return nil, err
		}
		res.Manifests[p] = desc.Digest
		index.Manifests = append(index.Manifests, desc)
	}
	b, _ := json.Marshal(index)
	d, err := f.put(ctx, b)
	if err != nil {
		return nil, err
	}
	res.Digest = d
	return res, nil
}

// image stores a one-layer image for ref and platform and describes its
// manifest.
func (f *fakeResolver) image(ctx context.Context, ref, platform string) (v1.Descriptor, error) {
	p, _ := v1.ParsePlatform(platform)
	layer := []byte("layer of " + ref + " for " + platform)
	ld, err := f.put(ctx, layer)
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfg, _ := json.Marshal(map[string]any{"os": p.OS, "architecture": p.Architecture, "variant": p.Variant,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{ld.String()}}})
	cd, err := f.put(ctx, cfg)
	if err != nil {
		return v1.Descriptor{}, err
	}
	m, _ := json.Marshal(v1.Manifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: cd},
		Layers: []v1.Descriptor{{MediaType: types.OCILayer, Size: int64(len(layer)), Digest: ld}},
	})
	md, err := f.put(ctx, m)
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(m)), Digest: md, Platform: p}, nil
}

func (f *fakeResolver) put(ctx context.Context, b []byte) (v1.Hash, error) {
	d, _, _ := v1.SHA256(bytes.NewReader(b))
	if f.store == nil {
		return d, nil
	}
	return d, f.store.Put(ctx, d, int64(len(b)), bytes.NewReader(b))
}

// resolved is what was resolved: ref -> platforms. It fails the test if a
// reference was resolved more than once.
func (f *fakeResolver) resolved(t *testing.T) map[string][]string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for _, c := range f.calls {
		if _, dup := out[c.ref]; dup {
			t.Errorf("%q resolved more than once", c.ref)
		}
		out[c.ref] = c.opts.Platforms
	}
	return out
}

func newStore(t *testing.T) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	amd64 = "linux/amd64"
	arm64 = "linux/arm64"
)

var pinnedDigest = "sha256:" + strings.Repeat("ab", 32)

func TestPinBaseImagesResolves(t *testing.T) {
	two := WithPlatforms(amd64, arm64)
	tests := []struct {
		name       string
		dockerfile string
		opts       []Option
		want       map[string][]string // ref -> platforms resolved
		wantKeys   []string            // context keys (NamedContexts)
		wantStages map[string][]string // "ref platform" -> stages
	}{
		{
			name:       "one image, build platform",
			dockerfile: "FROM alpine\nRUN true\n",
			want:       map[string][]string{"alpine": {amd64}},
			wantKeys:   []string{"context:alpine::linux/amd64"},
			wantStages: map[string][]string{"alpine linux/amd64": {"0"}},
		},
		{
			name:       "two platforms resolve once with both",
			dockerfile: "FROM alpine:3.20\n",
			opts:       []Option{two},
			want:       map[string][]string{"alpine:3.20": {amd64, arm64}},
			wantKeys:   []string{"context:alpine:3.20::linux/amd64", "context:alpine:3.20::linux/arm64"},
		},
		{
			name: "BUILDPLATFORM stage is resolved for the build platform only",
			dockerfile: `FROM --platform=$BUILDPLATFORM golang:1.22 AS build
RUN go build -o /out .
FROM alpine
COPY --from=build /out /bin/app
`,
			opts:       []Option{two},
			want:       map[string][]string{"golang:1.22": {amd64}, "alpine": {amd64, arm64}},
			wantKeys:   []string{"context:golang:1.22::linux/amd64", "context:alpine::linux/amd64", "context:alpine::linux/arm64"},
			wantStages: map[string][]string{"golang:1.22 linux/amd64": {"build"}, "alpine linux/arm64": {"1"}},
		},
		{
			name:       "BUILDPLATFORM follows WithBuildPlatform",
			dockerfile: "FROM --platform=${BUILDPLATFORM} golang:1.22 AS build\nFROM alpine\nCOPY --from=build / /\n",
			opts:       []Option{WithPlatforms(amd64), WithBuildPlatform(arm64)},
			want:       map[string][]string{"golang:1.22": {arm64}, "alpine": {amd64}},
		},
		{
			name:       "TARGETPLATFORM is each target platform",
			dockerfile: "FROM --platform=$TARGETPLATFORM alpine\n",
			opts:       []Option{two},
			want:       map[string][]string{"alpine": {amd64, arm64}},
		},
		{
			name:       "a fixed --platform wins over the targets",
			dockerfile: "FROM --platform=linux/arm64 tonistiigi/xx AS xx\nFROM scratch\nCOPY --from=xx / /\n",
			opts:       []Option{two},
			want:       map[string][]string{"tonistiigi/xx": {arm64}},
			wantKeys:   []string{"context:tonistiigi/xx::linux/arm64"},
		},
		{
			name:       "image per TARGETARCH",
			dockerfile: "FROM example.com/base-${TARGETARCH}:1\n",
			opts:       []Option{two},
			want:       map[string][]string{"example.com/base-amd64:1": {amd64}, "example.com/base-arm64:1": {arm64}},
			wantKeys:   []string{"context:example.com/base-amd64:1::linux/amd64", "context:example.com/base-arm64:1::linux/arm64"},
		},
		{
			name:       "meta ARG default",
			dockerfile: "ARG GO=1.22\nFROM golang:${GO}-alpine\n",
			want:       map[string][]string{"golang:1.22-alpine": {amd64}},
		},
		{
			name:       "build arg overrides a meta ARG",
			dockerfile: "ARG GO=1.22\nFROM golang:$GO\n",
			opts:       []Option{WithBuildArgs(map[string]string{"GO": "1.23"})},
			want:       map[string][]string{"golang:1.23": {amd64}},
		},
		{
			name:       "meta ARGs build on each other",
			dockerfile: "ARG REG=ghcr.io\nARG IMG=${REG}/acme/base\nARG TAG\nFROM ${IMG}:v1${TAG}\n",
			want:       map[string][]string{"ghcr.io/acme/base:v1": {amd64}},
			wantKeys:   []string{"context:ghcr.io/acme/base:v1::linux/amd64"},
		},
		{
			name:       "default in the FROM line itself",
			dockerfile: "FROM ${BASE:-debian:12}\n",
			want:       map[string][]string{"debian:12": {amd64}},
		},
		{
			name:       "build arg overrides an automatic ARG",
			dockerfile: "FROM --platform=$BUILDPLATFORM golang AS b\nFROM scratch\nCOPY --from=b / /\n",
			opts:       []Option{WithBuildArgs(map[string]string{"BUILDPLATFORM": "linux/riscv64"})},
			want:       map[string][]string{"golang": {"linux/riscv64"}},
		},
		{
			name: "stage name shadows the image name",
			dockerfile: `FROM alpine AS base
RUN apk add curl
FROM base
RUN curl --version
`,
			opts: []Option{two},
			want: map[string][]string{"alpine": {amd64, arm64}},
		},
		{
			name:       "stage names are lower-cased; COPY --from matches any case",
			dockerfile: "FROM alpine AS Builder\nRUN true\nFROM scratch\nCOPY --from=BUILDER /etc /etc\n",
			want:       map[string][]string{"alpine": {amd64}},
			wantStages: map[string][]string{"alpine linux/amd64": {"builder"}},
		},
		{
			name:       "COPY --from by stage index",
			dockerfile: "FROM alpine\nFROM scratch\nCOPY --from=0 /etc /etc\n",
			want:       map[string][]string{"alpine": {amd64}},
		},
		{
			name:       "COPY --from a later stage",
			dockerfile: "FROM scratch AS out\nCOPY --from=src /a /a\nFROM alpine AS src\n",
			opts:       []Option{WithTarget("out")},
			want:       map[string][]string{"alpine": {amd64}},
		},
		{
			name:       "scratch resolves nothing",
			dockerfile: "FROM scratch\nCOPY . /\n",
			opts:       []Option{two},
			want:       map[string][]string{},
		},
		{
			name:       "COPY --from an image, for the target platforms",
			dockerfile: "FROM --platform=$BUILDPLATFORM alpine AS x\nCOPY --from=busybox:1.36 /bin/busybox /bin/\n",
			opts:       []Option{two},
			want:       map[string][]string{"alpine": {amd64}, "busybox:1.36": {amd64, arm64}},
			wantStages: map[string][]string{"busybox:1.36 linux/arm64": {"x"}},
		},
		{
			name:       "COPY --from=scratch is no image",
			dockerfile: "FROM alpine\nCOPY --from=scratch / /\n",
			want:       map[string][]string{"alpine": {amd64}},
		},
		{
			name: "RUN --mount from an image and from a stage",
			dockerfile: `FROM alpine AS tools
FROM debian:12
RUN --mount=type=cache,target=/var/cache/apt \
    --mount=type=bind,from=golang:1.22,source=/usr/local/go,target=/go \
    --mount=from=TOOLS,target=/t \
    ls /go
`,
			want: map[string][]string{"alpine": {amd64}, "debian:12": {amd64}, "golang:1.22": {amd64}},
		},
		{
			name:       "one image under two spellings resolves once",
			dockerfile: "FROM alpine AS a\nFROM docker.io/library/alpine:latest AS b\nCOPY --from=a / /\n",
			want:       map[string][]string{"alpine": {amd64}},
			wantKeys:   []string{"context:alpine::linux/amd64"},
			wantStages: map[string][]string{"alpine linux/amd64": {"a", "b"}},
		},
		{
			name:       "only stages the last stage needs",
			dockerfile: "FROM golang AS unused\nFROM node:20 AS used\nFROM alpine\nCOPY --from=used /x /x\n",
			want:       map[string][]string{"node:20": {amd64}, "alpine": {amd64}},
		},
		{
			name:       "only stages the target needs",
			dockerfile: "FROM golang AS build\nFROM alpine AS Final\nFROM debian AS other\nCOPY --from=build / /\n",
			opts:       []Option{WithTarget("final"), two},
			want:       map[string][]string{"alpine": {amd64, arm64}},
		},
		{
			name:       "TARGETSTAGE is the target",
			dockerfile: "FROM alpine AS a\nFROM example.com/${TARGETSTAGE}:1 AS b\n",
			opts:       []Option{WithTarget("b")},
			want:       map[string][]string{"example.com/b:1": {amd64}},
		},
		{
			name:       "digest references are resolved as written",
			dockerfile: "FROM alpine:3.20@" + pinnedDigest + "\n",
			want:       map[string][]string{"alpine:3.20@" + pinnedDigest: {amd64}},
			wantKeys:   []string{"context:alpine:3.20@" + pinnedDigest + "::linux/amd64"},
		},
		{
			name:       "ONBUILD COPY --from runs in the stage built on it",
			dockerfile: "FROM alpine AS base\nONBUILD COPY --from=busybox /bin/busybox /bin/\nFROM base\n",
			want:       map[string][]string{"alpine": {amd64}, "busybox": {amd64}},
		},
		{
			name:       "ONBUILD does not run in its own stage",
			dockerfile: "FROM alpine\nONBUILD COPY --from=busybox /bin/busybox /bin/\n",
			want:       map[string][]string{"alpine": {amd64}},
		},
		{
			name:       "platform variants are normalized",
			dockerfile: "FROM alpine\n",
			opts:       []Option{WithPlatforms("linux/arm64/v8", "linux/arm", "linux/amd64")},
			want:       map[string][]string{"alpine": {arm64, "linux/arm/v7", amd64}},
			wantKeys:   []string{"context:alpine::linux/arm64", "context:alpine::linux/arm/v7", "context:alpine::linux/amd64"},
		},
		{
			name:       "registry with a port and a nested path",
			dockerfile: "FROM localhost:5000/team/app/base:2\n",
			want:       map[string][]string{"localhost:5000/team/app/base:2": {amd64}},
			wantKeys:   []string{"context:localhost:5000/team/app/base:2::linux/amd64"},
		},
		{
			name:       "escape directive and continuations",
			dockerfile: "# escape=`\nFROM `\n  alpine `\n  AS a\nRUN echo C:\\\n",
			want:       map[string][]string{"alpine": {amd64}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store := newStore(t)
			f := &fakeResolver{store: store}
			opts := append([]Option{WithBuildPlatform(amd64)}, tt.opts...)
			p, err := PinBaseImages(ctx, []byte(tt.dockerfile), f, store, opts...)
			if err != nil {
				t.Fatalf("PinBaseImages: %v", err)
			}
			if diff := cmp.Diff(tt.want, f.resolved(t)); diff != "" {
				t.Errorf("resolved (-want +got):\n%s", diff)
			}
			var keys []string
			for _, img := range p.Images {
				keys = append(keys, img.ContextKey)
				want := "oci-layout://" + DefaultStoreID + "@" + img.Manifest.String()
				if got := p.FrontendAttrs[img.ContextKey]; got != want {
					t.Errorf("FrontendAttrs[%q] = %q, want %q", img.ContextKey, got, want)
				}
				if img.Source != cache.Pulled || img.Digest == (v1.Hash{}) || img.Line == 0 {
					t.Errorf("image %+v: want Source pulled, a digest and a line", img)
				}
			}
			if len(p.FrontendAttrs) != len(p.Images) {
				t.Errorf("%d frontend attrs for %d images: %v", len(p.FrontendAttrs), len(p.Images), p.FrontendAttrs)
			}
			if tt.wantKeys != nil {
				if diff := cmp.Diff(tt.wantKeys, keys); diff != "" {
					t.Errorf("context keys (-want +got):\n%s", diff)
				}
			}
			for k, want := range tt.wantStages {
				ref, plat, _ := strings.Cut(k, " ")
				i := slices.IndexFunc(p.Images, func(img PinnedImage) bool { return img.Ref == ref && img.Platform == plat })
				if i < 0 {
					t.Errorf("no pinned image %s", k)
					continue
				}
				if diff := cmp.Diff(want, p.Images[i].Stages); diff != "" {
					t.Errorf("%s stages (-want +got):\n%s", k, diff)
				}
			}
			if p.Dockerfile != nil || len(p.OCIStores) != 1 || p.OCIStores[DefaultStoreID] == nil {
				t.Errorf("NamedContexts: Dockerfile %q, OCIStores %v", p.Dockerfile, p.OCIStores)
			}
		})
	}
}

func TestPinBaseImagesErrors(t *testing.T) {
	offline := fmt.Errorf("registry: golang:1.22 with policy never: %w", cache.ErrOffline)
	tests := []struct {
		name       string
		dockerfile string
		opts       []Option
		fail       map[string]error    // for the fake resolver
		only       map[string][]string // for the fake resolver
		wantIs     error
		wantMsg    []string
	}{
		{name: "empty", dockerfile: "  \n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile: invalid Dockerfile: the Dockerfile is empty"}},
		{name: "comments only", dockerfile: "# nothing\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"no instructions"}},
		{name: "no FROM", dockerfile: "ARG X=1\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"no FROM"}},
		{name: "instruction before FROM", dockerfile: "\nRUN true\nFROM alpine\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:2:", "RUN before the first FROM"}},
		{name: "FROM without image", dockerfile: "FROM alpine\nFROM\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:2:"}},
		{name: "FROM with two words", dockerfile: "FROM alpine AS\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:1:", "FROM requires either one or three arguments"}},
		{name: "unknown flag", dockerfile: "FROM --nope=1 alpine\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:1:", "unknown flag: --nope"}},
		{name: "unterminated heredoc", dockerfile: "FROM alpine\nRUN <<EOF\necho\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"unterminated heredoc"}},
		{name: "undeclared ARG", dockerfile: "FROM alpine\n\nFROM golang:${GO_VERSION}\n", wantIs: ErrUndefinedArg, wantMsg: []string{"Dockerfile:3:", "$GO_VERSION", "no ARG before the first FROM declares"}},
		{name: "build arg without ARG", dockerfile: "FROM golang:$GO\n", opts: []Option{WithBuildArgs(map[string]string{"GO": "1.22"})}, wantIs: ErrUndefinedArg, wantMsg: []string{"$GO"}},
		{name: "ARG declared after FROM", dockerfile: "FROM golang:${GO}\nARG GO=1\n", wantIs: ErrUndefinedArg},
		{name: "undeclared ARG in --platform", dockerfile: "FROM --platform=$PLAT alpine\n", wantIs: ErrUndefinedArg, wantMsg: []string{"$PLAT"}},
		{name: "ARG without value makes an invalid ref", dockerfile: "ARG TAG\nFROM alpine:${TAG}\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:2:", `invalid image reference "alpine:"`, "$TAG unset"}},
		{name: "ARG without value makes nothing", dockerfile: "ARG IMAGE\nFROM $IMAGE\n", wantIs: ErrUndefinedArg, wantMsg: []string{"Dockerfile:2:", "empty after ARG expansion", "$IMAGE unset"}},
		{name: "required ARG", dockerfile: "ARG IMAGE\nFROM ${IMAGE:?required}\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:2:", "IMAGE: required"}},
		{name: "invalid reference", dockerfile: "FROM Alpine\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{`invalid image reference "Alpine"`}},
		{name: "FROM a stage in the wrong case", dockerfile: "FROM alpine AS base\nFROM Base\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:2:", `write "base" for the stage`}},
		{name: "invalid platform", dockerfile: "FROM --platform=linux/!! alpine\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"FROM --platform=linux/!!"}},
		{name: "variable in COPY --from", dockerfile: "ARG X=a\nFROM alpine\nCOPY --from=$X / /\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:3:", "variable expansion is not supported for --from"}},
		{name: "variable in mount from", dockerfile: "FROM alpine\nRUN --mount=from=$X true\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"Dockerfile:2:", "doesn't support variable expansion"}},
		{name: "stage index out of range", dockerfile: "FROM alpine\nCOPY --from=3 / /\n", wantIs: ErrInvalidDockerfile, wantMsg: []string{"invalid stage index"}},
		{name: "file name", dockerfile: "FROM alpine\nFROM $NOPE\n", opts: []Option{WithDockerfile("build/Dockerfile.prod")}, wantIs: ErrUndefinedArg, wantMsg: []string{"build/Dockerfile.prod:2: "}},
		{name: "unknown target", dockerfile: "FROM alpine AS a\n", opts: []Option{WithTarget("b")}, wantIs: ErrInvalidDockerfile, wantMsg: []string{`target stage "b" is not defined (stages: a)`}},
		{
			name: "resolver error keeps its chain", dockerfile: "FROM alpine AS a\nFROM golang:1.22\n",
			opts: []Option{WithPlatforms(amd64, arm64)}, fail: map[string]error{"golang:1.22": offline},
			wantIs: cache.ErrOffline, wantMsg: []string{`Dockerfile:2: resolve "golang:1.22" for linux/amd64, linux/arm64: registry: golang:1.22 with policy never`},
		},
		{
			name: "first failing image in Dockerfile order", dockerfile: "FROM a\nFROM b\nFROM c\nCOPY --from=0 / /\nCOPY --from=1 / /\n",
			fail:    map[string]error{"b": errors.New("b failed"), "a": errors.New("a failed")},
			wantMsg: []string{`Dockerfile:1: resolve "a" for linux/amd64: a failed`},
		},
		{
			name: "platform missing from the image", dockerfile: "FROM alpine\n", opts: []Option{WithPlatforms(amd64, arm64)},
			only:   map[string][]string{"alpine": {amd64, "linux/s390x"}},
			wantIs: ErrPlatformNotFound, wantMsg: []string{"Dockerfile:1:", "linux/arm64", "it has linux/amd64"},
		},
		{
			name: "image and stage share a context name", dockerfile: "FROM base AS builder\nFROM alpine AS base\nCOPY --from=builder / /\n",
			wantIs: ErrContextConflict, wantMsg: []string{"Dockerfile:1:", `image "base" and stage "base" (line 2)`},
		},
		{
			name: "image named like its own stage", dockerfile: "FROM node AS node\nRUN npm ci\n",
			wantIs: ErrContextConflict,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newStore(t)
			f := &fakeResolver{store: store, fail: tt.fail, only: tt.only}
			opts := append([]Option{WithBuildPlatform(amd64)}, tt.opts...)
			p, err := PinBaseImages(context.Background(), []byte(tt.dockerfile), f, store, opts...)
			if err == nil {
				t.Fatalf("PinBaseImages = %+v, want an error", p)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q is not %v", err, tt.wantIs)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
			var le *LineError
			if !errors.As(err, &le) {
				t.Errorf("error %q is not a *LineError", err)
			}
		})
	}
}

func TestPinBaseImagesRewriteFromNeedsNoStore(t *testing.T) {
	f := &fakeResolver{}
	p, err := PinBaseImages(context.Background(), []byte("FROM alpine\n"), f, nil, WithMode(RewriteFrom), WithBuildPlatform(amd64))
	if err != nil {
		t.Fatal(err)
	}
	if p.FrontendAttrs != nil || p.OCIStores != nil || !strings.HasPrefix(string(p.Dockerfile), "FROM alpine@sha256:") {
		t.Errorf("RewriteFrom gave %+v", p)
	}
	if _, err := PinBaseImages(context.Background(), []byte("FROM alpine\n"), f, nil); err == nil {
		t.Error("NamedContexts with a nil store: no error")
	}
}

func TestPinBaseImagesPassesResolveOptions(t *testing.T) {
	f := &fakeResolver{store: newStore(t)}
	_, err := PinBaseImages(context.Background(), []byte("FROM a\nFROM b\nCOPY --from=0 / /\n"), f, f.store,
		WithBuildPlatform(amd64), WithResolveOptions(cache.WithPolicy(cache.PullNever)))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 2 {
		t.Fatalf("%d calls, want 2", len(f.calls))
	}
	for _, c := range f.calls {
		if c.opts.Policy != cache.PullNever {
			t.Errorf("Resolve(%q) got policy %v, want never", c.ref, c.opts.Policy)
		}
	}
	if _, err := PinBaseImages(context.Background(), []byte("FROM a\n"), f, f.store, WithResolveOptions(cache.WithPlatforms(arm64))); err == nil {
		t.Error("cache.WithPlatforms inside WithResolveOptions was accepted")
	}
}

func TestPinBaseImagesMissingBlob(t *testing.T) {
	store := newStore(t)
	f := &fakeResolver{} // does not store what it resolves
	_, err := PinBaseImages(context.Background(), []byte("\nFROM alpine\n"), f, store, WithBuildPlatform(amd64))
	if !errors.Is(err, cache.ErrNotFound) || !strings.Contains(err.Error(), "Dockerfile:2: alpine for linux/amd64: manifest sha256:") {
		t.Fatalf("err = %v, want ErrNotFound naming line, image and manifest", err)
	}
}

// TestRewriteFrom checks that only "@<digest>" is inserted, after each
// external image reference, whatever the formatting around it.
func TestRewriteFrom(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\r\n" + `ARG GO=1.22
# the builder
FROM --platform=$BUILDPLATFORM golang:${GO} AS build
RUN --mount=type=cache,target=/root/.cache \
    --mount=type=bind,"from=busybox:1.36",target=/bb \
    # a comment between continuation lines

    go build ./...
FROM \
  # comment inside FROM
  alpine\
  AS final
COPY --from=build /out /bin/
COPY --link --from="docker.io/library/debian:12" /etc/os-release /x
COPY --from=scratch / /
RUN --mount=from=ghcr.io/acme/tools:1,target=/t true
FROM alpine:3.20@` + pinnedDigest + ` AS pinned
COPY --from=final / /
	FROM  "quay.io/q/img"   AS   quoted  
COPY --from=pinned / /
`
	f := &fakeResolver{}
	p, err := PinBaseImages(context.Background(), []byte(src), f, nil, WithMode(RewriteFrom), WithPlatforms(amd64, arm64), WithBuildPlatform(amd64))
	if err != nil {
		t.Fatal(err)
	}
	digest := map[string]string{}
	for _, img := range p.Images {
		digest[img.Ref] = img.Digest.String()
	}
	d := func(ref string) string {
		if digest[ref] == "" {
			t.Fatalf("no digest for %q in %+v", ref, p.Images)
		}
		return "@" + digest[ref]
	}
	want := "# syntax=docker/dockerfile:1\r\n" + `ARG GO=1.22
# the builder
FROM --platform=$BUILDPLATFORM golang:${GO}` + d("golang:1.22") + ` AS build
RUN --mount=type=cache,target=/root/.cache \
    --mount=type=bind,"from=busybox:1.36` + d("busybox:1.36") + `",target=/bb \
    # a comment between continuation lines

    go build ./...
FROM \
  # comment inside FROM
  alpine` + d("alpine") + `\
  AS final
COPY --from=build /out /bin/
COPY --link --from="docker.io/library/debian:12` + d("docker.io/library/debian:12") + `" /etc/os-release /x
COPY --from=scratch / /
RUN --mount=from=ghcr.io/acme/tools:1` + d("ghcr.io/acme/tools:1") + `,target=/t true
FROM alpine:3.20@` + pinnedDigest + ` AS pinned
COPY --from=final / /
	FROM  "quay.io/q/img"` + d("quay.io/q/img") + `   AS   quoted  
COPY --from=pinned / /
`
	if diff := cmp.Diff(want, string(p.Dockerfile)); diff != "" {
		t.Errorf("rewritten Dockerfile (-want +got):\n%s", diff)
	}
	// BuildKit's parser reads the same instructions, with digests.
	before, after := dump(t, []byte(src)), dump(t, p.Dockerfile)
	if len(before) != len(after) {
		t.Fatalf("%d instructions before, %d after", len(before), len(after))
	}
	changed := 0
	for i := range before {
		if before[i] != after[i] {
			changed++
			if !strings.Contains(after[i], "@sha256:") {
				t.Errorf("instruction %d changed without a digest:\n%s\n%s", i, before[i], after[i])
			}
		}
	}
	if changed != 6 {
		t.Errorf("%d instructions changed, want 6", changed)
	}
	// Pinning the result again changes nothing.
	again, err := PinBaseImages(context.Background(), p.Dockerfile, &fakeResolver{}, nil, WithMode(RewriteFrom), WithPlatforms(amd64, arm64), WithBuildPlatform(amd64))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Dockerfile, p.Dockerfile) {
		t.Errorf("rewriting a rewritten Dockerfile changed it:\n%s", again.Dockerfile)
	}
}

func TestRewriteFromEscapeAndOnbuild(t *testing.T) {
	src := "# escape=`\nFROM alpine AS base\nONBUILD COPY --from=busybox `\n  /bin/busybox /bin/\nFROM `\n base\nRUN dir C:\\\n"
	f := &fakeResolver{}
	p, err := PinBaseImages(context.Background(), []byte(src), f, nil, WithMode(RewriteFrom), WithBuildPlatform(amd64))
	if err != nil {
		t.Fatal(err)
	}
	var alpine, busybox string
	for _, img := range p.Images {
		switch img.Ref {
		case "alpine":
			alpine = img.Digest.String()
		case "busybox":
			busybox = img.Digest.String()
		}
	}
	want := "# escape=`\nFROM alpine@" + alpine + " AS base\nONBUILD COPY --from=busybox@" + busybox + " `\n  /bin/busybox /bin/\nFROM `\n base\nRUN dir C:\\\n"
	if diff := cmp.Diff(want, string(p.Dockerfile)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestRewriteFromCSVMounts: a --mount value is one CSV record, whose
// fields may be quoted (with commas inside) once shell quoting is off.
func TestRewriteFromCSVMounts(t *testing.T) {
	src := "FROM scratch\nRUN --mount='type=bind,\"source=a,b\",\"from=busybox:1.36\",target=/t' \\\n  --mount=type=bind,from=alpine,\"target=/x\" true\n"
	p, err := PinBaseImages(context.Background(), []byte(src), &fakeResolver{}, nil, WithMode(RewriteFrom), WithBuildPlatform(amd64))
	if err != nil {
		t.Fatal(err)
	}
	d := map[string]string{}
	for _, img := range p.Images {
		d[img.Ref] = "@" + img.Digest.String()
	}
	want := "FROM scratch\nRUN --mount='type=bind,\"source=a,b\",\"from=busybox:1.36" + d["busybox:1.36"] + "\",target=/t' \\\n  --mount=type=bind,from=alpine" + d["alpine"] + ",\"target=/x\" true\n"
	if diff := cmp.Diff(want, string(p.Dockerfile)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestRewriteFromRefusesPerPlatformImages(t *testing.T) {
	_, err := PinBaseImages(context.Background(), []byte("FROM example.com/base-${TARGETARCH}\n"), &fakeResolver{}, nil,
		WithMode(RewriteFrom), WithPlatforms(amd64, arm64))
	if err == nil || !strings.Contains(err.Error(), "Dockerfile:1:") || !strings.Contains(err.Error(), "different image per platform") {
		t.Fatalf("err = %v", err)
	}
}

// dump is each instruction as BuildKit's parser reads it.
func dump(t *testing.T, src []byte) []string {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		t.Fatalf("BuildKit's parser: %v", err)
	}
	var out []string
	for _, n := range res.AST.Children {
		out = append(out, n.Dump())
	}
	return out
}

// TestPinBaseImagesRealResolver pins a two-platform image from an
// in-process registry through registry.NewResolver into a localfs store,
// and reads every blob BuildKit will ask for through the content store it
// gets in OCIStores.
func TestPinBaseImagesRealResolver(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/library/base:1"
	// As on Docker Hub: linux/arm64 has variant v8.
	idx := testimage.ForTest(t).RandomIndex([]string{"linux/amd64", "linux/arm64/v8"}, 2048, 2)
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	indexDigest, _ := idx.Digest()
	wantManifest := map[string]v1.Hash{amd64: im.Manifests[0].Digest, arm64: im.Manifests[1].Digest}

	store := newStore(t)
	client, err := regclient.New(regclient.WithRetry(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := registry.NewResolver(store, registry.WithClient(client))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := []byte("FROM --platform=$BUILDPLATFORM " + ref + " AS build\nRUN make\nFROM " + ref + "\nCOPY --from=build /out /\n")
	pin := func(opts ...Option) (*Pinned, error) {
		return PinBaseImages(ctx, dockerfile, resolver, store, append([]Option{WithPlatforms(amd64, arm64), WithBuildPlatform(amd64)}, opts...)...)
	}
	p, err := pin()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Images) != 2 {
		t.Fatalf("pinned %+v, want the image for two platforms", p.Images)
	}
	cs := p.OCIStores[DefaultStoreID]
	for _, img := range p.Images {
		if img.Digest != indexDigest || img.Manifest != wantManifest[img.Platform] || img.Source != cache.Pulled {
			t.Errorf("pinned %+v, want index %s, manifest %s, pulled", img, indexDigest, wantManifest[img.Platform])
		}
		key := "context:" + ref + "::" + img.Platform
		if got, want := p.FrontendAttrs[key], "oci-layout://buildcache@"+wantManifest[img.Platform].String(); got != want {
			t.Errorf("FrontendAttrs[%q] = %q, want %q", key, got, want)
		}
		// Everything the daemon reads through the session: the manifest,
		// its config and its layers.
		m, err := remote.Image(tag.Context().Digest(img.Manifest.String()))
		if err != nil {
			t.Fatal(err)
		}
		mf, err := m.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := m.RawManifest()
		descs := append([]v1.Descriptor{{Digest: img.Manifest, Size: int64(len(raw)), MediaType: mf.MediaType}, mf.Config}, mf.Layers...)
		for _, d := range descs {
			dg := digest.Digest(d.Digest.String())
			info, err := cs.Info(ctx, dg)
			if err != nil {
				t.Fatalf("Info(%s): %v", dg, err)
			}
			if info.Size != d.Size {
				t.Errorf("Info(%s).Size = %d, want %d", dg, info.Size, d.Size)
			}
			ra, err := cs.ReaderAt(ctx, ocispecs.Descriptor{Digest: dg, Size: d.Size, MediaType: string(d.MediaType)})
			if err != nil {
				t.Fatalf("ReaderAt(%s): %v", dg, err)
			}
			b := make([]byte, ra.Size())
			if _, err := ra.ReadAt(b, 0); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			ra.Close()
			if got := digest.FromBytes(b); got != dg {
				t.Errorf("blob %s reads as %s", dg, got)
			}
		}
	}
	if _, err := cs.Writer(ctx, content.WithRef("x")); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("Writer on the OCI store: %v, want permission denied", err)
	}
	if err := cs.Delete(ctx, digest.Digest(indexDigest.String())); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("Delete on the OCI store: %v, want permission denied", err)
	}

	// Again: one HEAD revalidates it.
	if p, err = pin(); err != nil {
		t.Fatal(err)
	}
	for _, img := range p.Images {
		if img.Source != cache.Revalidated {
			t.Errorf("second pin: %s %s source %v, want revalidated", img.Ref, img.Platform, img.Source)
		}
	}

	// RewriteFrom: the index digest, and BuildKit's parser reads it.
	rp, err := pin(WithMode(RewriteFrom))
	if err != nil {
		t.Fatal(err)
	}
	pinnedRef := ref + "@" + indexDigest.String()
	if want := strings.ReplaceAll(string(dockerfile), ref, pinnedRef); string(rp.Dockerfile) != want {
		t.Errorf("rewritten:\n%s\nwant:\n%s", rp.Dockerfile, want)
	}
	res, err := parser.Parse(bytes.NewReader(rp.Dockerfile))
	if err != nil {
		t.Fatalf("BuildKit's parser rejects the rewritten Dockerfile: %v", err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil || len(stages) != 2 || stages[0].BaseName != pinnedRef || stages[1].BaseName != pinnedRef {
		t.Fatalf("rewritten Dockerfile parses to %+v, %v", stages, err)
	}

	// The registry gone, the store still pins it; PullNever is a hit.
	srv.Close()
	p, err = pin(WithResolveOptions(cache.WithPolicy(cache.PullNever)))
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range p.Images {
		if img.Source != cache.Hit || img.Manifest != wantManifest[img.Platform] {
			t.Errorf("offline pin: %+v, want a hit on %s", img, wantManifest[img.Platform])
		}
	}
	// A tag never resolved, offline: ErrOffline, named by line.
	_, err = PinBaseImages(ctx, []byte("FROM alpine\n\nFROM "+strings.TrimSuffix(ref, ":1")+":2\nCOPY --from=0 / /\n"), resolver, store,
		WithBuildPlatform(amd64), WithResolveOptions(cache.WithPolicy(cache.PullNever)))
	if !errors.Is(err, cache.ErrOffline) || !strings.HasPrefix(err.Error(), `Dockerfile:1: resolve "alpine" for linux/amd64:`) {
		t.Errorf("offline, never resolved: %v", err)
	}
}
