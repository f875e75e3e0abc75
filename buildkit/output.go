package buildkit

import (
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/client"
)

// Output is where Build puts the image it built: OCITarball, LocalDir or
// PushImage. With no output the build only fills the caches.
type Output struct {
	typ   string
	path  string // OCITarball: the tar file; LocalDir: the directory
	name  string // PushImage: the image name
	attrs map[string]string
}

// OCITarball writes the image (an index with one manifest per platform)
// as an OCI image layout tarball to path. The file appears only when the
// build succeeded; a failed build leaves no partial file.
func OCITarball(path string) Output {
	return Output{typ: client.ExporterOCI, path: path, attrs: map[string]string{}}
}

// LocalDir copies the built filesystem into dir, in one subdirectory per
// platform ("linux_amd64", "linux_arm64") when there are several.
func LocalDir(dir string) Output {
	return Output{typ: client.ExporterLocal, path: dir, attrs: map[string]string{}}
}

// PushImage pushes the image to a registry under ref ("host/repo:tag").
// The daemon pushes, with credentials the client's Docker config
// (~/.docker/config.json) holds; plain HTTP is allowed for loopback hosts
// (127.0.0.1, localhost, ::1).
func PushImage(ref string) Output {
	attrs := map[string]string{"name": ref, "push": "true"}
	if r, err := name.ParseReference(ref); err == nil && isLoopback(r.Context().RegistryStr()) {
		attrs["registry.insecure"] = "true"
	}
	return Output{typ: client.ExporterImage, name: ref, attrs: attrs}
}

// WithAttr returns the output with an exporter attribute added, e.g.
// ("compression", "zstd") or ("oci-mediatypes", "true").
func (o Output) WithAttr(key, value string) Output {
	o.attrs = maps.Clone(o.attrs)
	o.attrs[key] = value
	return o
}

func isLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tarFile is an exporter's tar output: written to a temp file next to
// path and renamed over it once the build succeeded.
type tarFile struct {
	path string
	mu   sync.Mutex
	tmp  string
}

func (t *tarFile) create(map[string]string) (io.WriteCloser, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tmp != "" {
		os.Remove(t.tmp)
	}
	f, err := os.CreateTemp(filepath.Dir(t.path), "."+filepath.Base(t.path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("buildkit: output %s: %w", t.path, err)
	}
	t.tmp = f.Name()
	return &syncedFile{f}, nil
}

func (t *tarFile) commit() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tmp == "" {
		return fmt.Errorf("buildkit: output %s: the daemon sent nothing", t.path)
	}
	if err := os.Rename(t.tmp, t.path); err != nil {
		return fmt.Errorf("buildkit: output %s: %w", t.path, err)
	}
	t.tmp = ""
	return nil
}

func (t *tarFile) remove() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tmp != "" {
		os.Remove(t.tmp)
		t.tmp = ""
	}
}

// syncedFile fsyncs before closing, so a renamed output is complete.
type syncedFile struct{ *os.File }

func (f *syncedFile) Close() error {
	err := f.File.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}
