package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/internal/staticbuild"
)

// Defaults of Options.
const (
	DefaultSource = "https://github.com/buildcache/buildcache"
	// DefaultLicenses is SPDX's "not stated": the repository carries no
	// license file yet. Pass --licenses once it does.
	DefaultLicenses = "NOASSERTION"
	// DefaultCACerts is Debian's bundle (package ca-certificates).
	DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"
)

// Where things are in the image.
const (
	binaryPath  = "/usr/bin/buildcache"
	caCertsPath = "/etc/ssl/certs/ca-certificates.crt" // where Go's crypto/x509 looks first on Linux
	homeDir     = "/home/nonroot"
	// UID and GID of the user the image runs as: distroless's "nonroot".
	uid = 65532
	gid = 65532
)

// The OCI annotation keys the image and its index carry.
const (
	annSource   = "org.opencontainers.image.source"
	annVersion  = "org.opencontainers.image.version"
	annRevision = "org.opencontainers.image.revision"
	annLicenses = "org.opencontainers.image.licenses"
	annCreated  = "org.opencontainers.image.created"
	annTitle    = "org.opencontainers.image.title"
	annRefName  = "org.opencontainers.image.ref.name"
)

// Options say what Build builds.
type Options struct {
	Platforms []string  // "linux/amd64", "linux/arm64"; none: both
	ModuleDir string    // the buildcache module's root
	Version   string    // annotations and buildcache --version; "" is "dev"
	Revision  string    // the source revision, for the annotation ("" leaves it out)
	Source    string    // the repository URL; "" is DefaultSource
	Licenses  string    // an SPDX expression; "" is DefaultLicenses
	CACerts   string    // the CA bundle to copy; "" is DefaultCACerts
	Created   time.Time // every timestamp of the image; zero is 1970-01-01
	Tag       string    // the ref name in a layout; "" is the version

	// CompressionLevel is the layers' gzip level, 1 (fastest) to 9; zero
	// is gzip.BestCompression. Same source, same level: same digests.
	CompressionLevel int

	// Binaries, when set, gives a prebuilt binary per platform instead of
	// building one ("linux/arm64" -> path).
	Binaries map[string]string
}

func (o Options) tag() string {
	if o.Tag != "" {
		return o.Tag
	}
	return o.version()
}

func (o Options) compressionLevel() (int, error) {
	switch {
	case o.CompressionLevel == 0:
		return gzip.BestCompression, nil
	case o.CompressionLevel < gzip.BestSpeed || o.CompressionLevel > gzip.BestCompression:
		return 0, fmt.Errorf("compression level %d: want 1 (fastest) to 9 (smallest)", o.CompressionLevel)
	}
	return o.CompressionLevel, nil
}

func (o Options) version() string {
	if o.Version != "" {
		return o.Version
	}
	return "dev"
}

func (o Options) annotations() map[string]string {
	a := map[string]string{
		annSource:   o.Source,
		annVersion:  o.version(),
		annLicenses: o.Licenses,
		annCreated:  o.Created.UTC().Format(time.RFC3339),
		annTitle:    "buildcache",
	}
	if a[annSource] == "" {
		a[annSource] = DefaultSource
	}
	if a[annLicenses] == "" {
		a[annLicenses] = DefaultLicenses
	}
	if o.Revision != "" {
		a[annRevision] = o.Revision
	}
	return a
}

// Build builds buildcache for each platform and assembles the image
// index: one image per platform, each a single layer on an empty base.
func Build(ctx context.Context, o Options) (v1.ImageIndex, error) {
	if len(o.Platforms) == 0 {
		o.Platforms = []string{"linux/amd64", "linux/arm64"}
	}
	if o.Created.IsZero() {
		o.Created = time.Unix(0, 0).UTC()
	}
	if o.CACerts == "" {
		o.CACerts = DefaultCACerts
	}
	level, err := o.compressionLevel()
	if err != nil {
		return nil, err
	}
	certs, err := os.ReadFile(o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates (apt-get install ca-certificates, or --ca-certs FILE): %w", err)
	}
	ann := o.annotations()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, p := range o.Platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			return nil, err
		}
		if plat.OS != "linux" || (plat.Architecture != "amd64" && plat.Architecture != "arm64") {
			return nil, fmt.Errorf("platform %s: want linux/amd64 or linux/arm64", p)
		}
		bin, ok := o.Binaries[p]
		if !ok {
			dir, err := os.MkdirTemp("", "buildcache-image-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			bin = filepath.Join(dir, "buildcache")
			if err := staticbuild.Build(ctx, o.ModuleDir, plat.Architecture, o.version(), bin); err != nil {
				return nil, err
			}
		}
		img, err := platformImage(*plat, bin, certs, o.Created, ann, level)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	idx = mutate.AppendManifests(idx, adds...)
	return mutate.Annotations(idx, ann).(v1.ImageIndex), nil
}

// platformImage is one platform's image: the layer, the config (entry
// point, user, environment, labels) and the annotations.
func platformImage(plat v1.Platform, bin string, certs []byte, created time.Time, ann map[string]string, level int) (v1.Image, error) {
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	tarBytes, err := layerTar(binary, certs, created)
	if err != nil {
		return nil, err
	}
	layer, err := gzipLayer(tarBytes, level)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "deploy/image: buildcache " + ann[annVersion] + " (CGO_ENABLED=0 -trimpath), CA certificates, passwd",
		},
		MediaType: types.OCILayer,
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: created}
	cf.Author = ann[annSource]
	cf.Config = v1.Config{
		Entrypoint: []string{binaryPath},
		User:       fmt.Sprintf("%d:%d", uid, gid),
		WorkingDir: homeDir,
		Env: []string{
			"PATH=/usr/bin:/bin",
			"HOME=" + homeDir,
			"SSL_CERT_FILE=" + caCertsPath,
		},
		Labels: ann,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, ann).(v1.Image), nil
}

// entry is one file or directory of the layer.
type entry struct {
	name string // without a leading slash; directories end in /
	mode int64
	uid  int
	data []byte
}

// layerTar writes the layer's tar: entries sorted by name, owners, modes
// and times fixed, no user or group names, so that its bytes depend on
// the binary and the CA bundle only.
func layerTar(binary, certs []byte, created time.Time) ([]byte, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n", uid, gid, homeDir)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", gid)
	entries := []entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: strings.TrimPrefix(caCertsPath, "/"), mode: 0o644, data: certs},
		{name: "home/", mode: 0o755},
		{name: strings.TrimPrefix(homeDir, "/") + "/", mode: 0o700, uid: uid},
		{name: "tmp/", mode: 0o1777},
		{name: "usr/", mode: 0o755},
		{name: "usr/bin/", mode: 0o755},
		{name: strings.TrimPrefix(binaryPath, "/"), mode: 0o755, data: binary},
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.uid, // the non-root user's entries are its group's too
			ModTime: created,
			Format:  tar.FormatPAX,
		}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipLayer is the layer of tarBytes, gzipped once at level (compress/gzip
// writes no name or time in its header: the same bytes give the same
// blob) and kept in memory.
func gzipLayer(tarBytes []byte, level int) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithCompressionLevel(level), tarball.WithCompressedCaching, tarball.WithMediaType(types.OCILayer))
}

// WriteLayout writes idx to an OCI image layout at dir under the ref name
// tag. An existing layout at dir is replaced; any other non-empty
// directory is refused.
func WriteLayout(dir string, idx v1.ImageIndex, tag string) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
			return fmt.Errorf("%s is not empty and holds no OCI layout: not replacing it", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{annRefName: tag}))
}
