package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/client"
)

// What the example builds on: a base image with nothing from any registry
// and, without -addr, a buildkitd of its own.

// progSource is the base image's /prog: `/prog arch FILE` writes the
// platform it runs as to FILE. The image has no shell, so RUN uses the
// exec form.
const progSource = `package main

import (
	"os"
	"path/filepath"
	"runtime"
)

func main() {
	if len(os.Args) != 3 || os.Args[1] != "arch" {
		os.Exit(2)
	}
	if os.MkdirAll(filepath.Dir(os.Args[2]), 0o755) != nil || os.WriteFile(os.Args[2], []byte(runtime.GOOS+"/"+runtime.GOARCH+"\n"), 0o644) != nil {
		os.Exit(1)
	}
}
`

// baseIndex returns an index of one image per platform ("linux/amd64"):
// the filler layer, then /prog compiled for the platform.
func baseIndex(platforms []string, filler v1.Layer) (v1.ImageIndex, error) {
	var idx v1.ImageIndex = empty.Index
	for _, s := range platforms {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			return nil, err
		}
		prog, err := progLayer(p.Architecture)
		if err != nil {
			return nil, err
		}
		cfg := &v1.ConfigFile{OS: p.OS, Architecture: p.Architecture, RootFS: v1.RootFS{Type: "layers"}, Config: v1.Config{Entrypoint: []string{"/prog"}}}
		img, err := mutate.ConfigFile(empty.Image, cfg)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, filler, prog); err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	return idx, nil
}

// fillerLayer is n incompressible bytes made from seed: weight for the
// base image, the same on every run.
func fillerLayer(n int, seed int64) (v1.Layer, error) {
	return random.Layer(int64(n), types.OCILayer, random.WithSource(rand.NewSource(seed)))
}

// progLayer compiles /prog for linux/goarch (needs the go command) and
// puts it in a layer, executable.
func progLayer(goarch string) (v1.Layer, error) {
	dir, err := os.MkdirTemp("", "multiarch-prog-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for name, body := range map[string]string{"go.mod": "module prog\n\ngo 1.22\n", "main.go": progSource} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "prog", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building /prog for %s: %v\n%s", goarch, err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "prog"))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "prog", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// startBuildkitd starts the buildkitd on PATH with the OCI worker (it
// needs root and runc), its state in a temp dir, and waits up to a minute
// for it to answer.
func startBuildkitd() (addr string, stop func(), err error) {
	bin, err := exec.LookPath("buildkitd")
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "bk") // short: a socket path has ~108 bytes
	if err != nil {
		return "", nil, err
	}
	addr = "unix://" + filepath.Join(dir, "buildkitd.sock")
	cmd := exec.Command(bin, "--root", filepath.Join(dir, "root"), "--addr", addr, "--oci-worker=true", "--containerd-worker=false")
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		c, err := client.New(ctx, addr)
		if err == nil {
			var ws []*client.WorkerInfo
			ws, err = c.ListWorkers(ctx)
			c.Close()
			if err == nil && len(ws) > 0 {
				return addr, stop, nil
			}
		}
		select {
		case <-ctx.Done():
			stop()
			return "", nil, fmt.Errorf("buildkitd on %s did not answer: %v", addr, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
