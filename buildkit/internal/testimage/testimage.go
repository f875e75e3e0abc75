// Package testimage makes tiny multi-platform base images for the
// buildkit tests, with nothing from any registry: each image holds one
// static Go program, /prog, cross-compiled for its platform. There is no
// shell in them; RUN steps use the exec form:
//
//	RUN ["/prog", "arch", "/out/arch"]  # writes "linux/arm64\n" to /out/arch
//	RUN ["/prog", "fail"]               # prints to stderr and exits 3
package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

// progSource is /prog. It stays tiny: arm64 runs it under qemu.
const progSource = `package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: prog arch FILE | prog fail")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "arch":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: prog arch FILE")
			os.Exit(2)
		}
		if err := os.MkdirAll(filepath.Dir(os.Args[2]), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := os.WriteFile(os.Args[2], []byte(runtime.GOOS+"/"+runtime.GOARCH+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "fail":
		fmt.Fprintln(os.Stderr, "prog: failing as asked")
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "prog: unknown command", os.Args[1])
		os.Exit(2)
	}
}
`

var programs struct {
	mu   sync.Mutex
	bins map[string][]byte // GOARCH -> binary
}

// Program returns /prog compiled for linux/goarch (CGO_ENABLED=0,
// stripped), built once per test binary.
func Program(t testing.TB, goarch string) []byte {
	t.Helper()
	programs.mu.Lock()
	defer programs.mu.Unlock()
	if b, ok := programs.bins[goarch]; ok {
		return b
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module prog\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(progSource), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "prog")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=", "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building /prog for linux/%s: %v\n%s", goarch, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if programs.bins == nil {
		programs.bins = map[string][]byte{}
	}
	programs.bins[goarch] = b
	return b
}

// Index returns an OCI image index with one image per platform
// ("linux/amd64", "linux/arm64"), each holding /prog for its platform
// in a single gzip layer.
func Index(t testing.TB, platforms ...string) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		os, arch, ok := strings.Cut(p, "/")
		if !ok || os != "linux" || strings.Contains(arch, "/") {
			t.Fatalf("testimage: platform %q: want linux/<arch>", p)
		}
		img := Image(t, arch)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: os, Architecture: arch}},
		})
	}
	return idx
}

// Image returns the single-platform image for linux/goarch.
func Image(t testing.TB, goarch string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	prog := Program(t, goarch)
	if err := tw.WriteHeader(&tar.Header{Name: "prog", Mode: 0o755, Size: int64(len(prog)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(prog); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "testimage: /prog"}})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch
	cf.Config.Entrypoint = []string{"/prog"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Push writes idx to ref ("127.0.0.1:port/base:v1") over plain HTTP and
// returns the index digest.
func Push(t testing.TB, ref string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(context.Background())); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Store writes idx, its manifests, configs and layers into store, the
// way a resolver would have, and returns the index digest. It does not
// touch the store's index.json.
func Store(t testing.TB, store cache.LayerCache, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ctx := context.Background()
	put := func(d v1.Hash, b []byte) {
		if err := store.Put(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatalf("storing %s: %v", d, err)
		}
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			d, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			put(d, b)
		}
		cfgName, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		put(cfgName, cfg)
		raw, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		put(desc.Digest, raw)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	put(d, raw)
	return d
}
