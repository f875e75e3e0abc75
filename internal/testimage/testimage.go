// Package testimage makes tiny multi-platform base images with nothing
// from any registry: each image holds one static Go program, /prog,
// cross-compiled for its platform (and optionally filler layers, to give
// a pull some weight). There is no shell in them; RUN steps use the exec
// form:
//
//	RUN ["/prog", "arch", "/out/arch"]  # writes "linux/arm64\n" to /out/arch
//	RUN ["/prog", "fail"]               # prints to stderr and exits 3
//
// Building /prog needs the go command.
//
// RandomIndex makes multi-platform images of random layers, for tests
// that move images about and never run them. Push and Store put an image
// in a registry or a cache. Every function returns its error; ForTest(t)
// has the same ones failing the test instead.
package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
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
// stripped), built once per process.
func Program(goarch string) ([]byte, error) {
	programs.mu.Lock()
	defer programs.mu.Unlock()
	if b, ok := programs.bins[goarch]; ok {
		return b, nil
	}
	dir, err := os.MkdirTemp("", "testimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module prog\n\ngo 1.22\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(progSource), 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(dir, "prog")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=", "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testimage: building /prog for linux/%s: %v\n%s", goarch, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if programs.bins == nil {
		programs.bins = map[string][]byte{}
	}
	programs.bins[goarch] = b
	return b, nil
}

// Index returns an OCI image index with one image per platform
// ("linux/amd64", "linux/arm64"), each holding /prog for its platform in
// one gzip layer, on top of the filler layers given (shared by every
// platform, as a distribution's base layers often are not — but it keeps
// the image small to make).
func Index(platforms []string, filler ...v1.Layer) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		os, arch, ok := strings.Cut(p, "/")
		if !ok || os != "linux" || strings.Contains(arch, "/") {
			return nil, fmt.Errorf("testimage: platform %q: want linux/<arch>", p)
		}
		img, err := Image(arch, filler...)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: os, Architecture: arch}},
		})
	}
	return idx, nil
}

// Image returns the single-platform image for linux/goarch: the filler
// layers, then /prog.
func Image(goarch string, filler ...v1.Layer) (v1.Image, error) {
	prog, err := Program(goarch)
	if err != nil {
		return nil, err
	}
	layer, err := tarLayer(map[string][]byte{"prog": prog})
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range filler {
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "testimage: /prog"}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch
	cf.Config.Entrypoint = []string{"/prog"}
	return mutate.ConfigFile(img, cf)
}

// Filler returns a layer holding one file of n incompressible bytes made
// from seed: weight for a base image, the same for the same seed.
func Filler(name string, n int, seed uint64) (v1.Layer, error) {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return tarLayer(map[string][]byte{name: b})
}

func tarLayer(files map[string][]byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
