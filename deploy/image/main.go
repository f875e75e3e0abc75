// Command image builds the container image of buildcache for linux/amd64
// and linux/arm64, as ko does: the static binary (CGO_ENABLED=0,
// -trimpath) in one layer on an empty base, with the build machine's CA
// bundle, an /etc/passwd naming the non-root user 65532, and the OCI
// annotations (source, version, revision, licenses, created). No base image
// is pulled: the image is assembled with go-containerregistry from what
// this repository and the build machine hold.
//
// The build is reproducible: the same source, Go toolchain, CA bundle and
// flags give the same index digest. Every timestamp is the
// SOURCE_DATE_EPOCH (default: the commit time of HEAD), tar entries are
// sorted with fixed owners, modes and times, and the layers are gzipped
// deterministically, at --compression-level (default 9, the smallest).
//
// Usage, from the module's root:
//
//	go run ./deploy/image --oci-layout out/image      # an OCI image layout
//	go run ./deploy/image --push ghcr.io/o/buildcache:v1.2.3
//
// It prints the index digest. --platform narrows the platforms;
// --version, --revision, --source and --licenses set the annotations
// (and --version what `buildcache --version` prints).
package main

import (
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var (
		o         Options
		platforms string
		layoutDir string
		push      string
		epoch     string
	)
	fs.StringVar(&platforms, "platform", "linux/amd64,linux/arm64", "the `PLATFORMS` to build, comma-separated")
	fs.StringVar(&layoutDir, "oci-layout", "", "write the image index to the OCI image layout `DIR` (created; an existing layout there is replaced)")
	fs.StringVar(&push, "push", "", "push the image index to `REF` (credentials from Docker's config.json)")
	fs.StringVar(&o.Tag, "tag", "", "the `NAME` of the index in the layout (org.opencontainers.image.ref.name; default: the version)")
	fs.StringVar(&o.Version, "version", "", "the `VERSION` of the annotations and of buildcache --version (default: git describe --tags --always, else dev)")
	fs.StringVar(&o.Revision, "revision", "", "the source `REVISION` (default: git rev-parse HEAD)")
	fs.StringVar(&o.Source, "source", DefaultSource, "the source repository `URL` (org.opencontainers.image.source)")
	fs.StringVar(&o.Licenses, "licenses", DefaultLicenses, "the SPDX `EXPRESSION` of the licenses (org.opencontainers.image.licenses)")
	fs.StringVar(&o.CACerts, "ca-certs", DefaultCACerts, "the CA bundle `FILE` copied to "+caCertsPath)
	fs.StringVar(&epoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "every timestamp, in `SECONDS` since 1970 (default $SOURCE_DATE_EPOCH, else the commit time of HEAD)")
	fs.IntVar(&o.CompressionLevel, "compression-level", gzip.BestCompression, "the layers' gzip `LEVEL`, 1 (fastest) to 9 (smallest)")
	fs.StringVar(&o.ModuleDir, "module", "", "the buildcache module's `DIR` (default: the current module)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if layoutDir == "" && push == "" {
		return fmt.Errorf("nothing to do: give --oci-layout DIR, --push REF or both")
	}
	for _, p := range strings.Split(platforms, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.Platforms = append(o.Platforms, p)
		}
	}
	if o.ModuleDir == "" {
		out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
		if err != nil {
			return fmt.Errorf("finding the module (run this from the repository, or give --module): %w", err)
		}
		o.ModuleDir = strings.TrimSpace(string(out))
	}
	if o.Version == "" {
		o.Version = git(ctx, o.ModuleDir, "describe", "--tags", "--always")
		if o.Version == "" {
			o.Version = "dev"
		}
	}
	if o.Revision == "" {
		o.Revision = git(ctx, o.ModuleDir, "rev-parse", "HEAD")
	}
	if epoch == "" {
		epoch = git(ctx, o.ModuleDir, "log", "-1", "--format=%ct")
	}
	if epoch != "" {
		s, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil || s < 0 {
			return fmt.Errorf("source date epoch %q: want seconds since 1970", epoch)
		}
		o.Created = time.Unix(s, 0).UTC()
	}

	idx, err := Build(ctx, o)
	if err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	if err := publish(ctx, idx, layoutDir, o.tag(), push); err != nil {
		return err
	}
	fmt.Println(d)
	return nil
}

// publish writes idx to the OCI layout at layoutDir under tag and pushes
// it to the reference push, each when given.
func publish(ctx context.Context, idx v1.ImageIndex, layoutDir, tag, push string) error {
	if layoutDir != "" {
		if err := WriteLayout(layoutDir, idx, tag); err != nil {
			return err
		}
	}
	if push != "" {
		ref, err := name.ParseReference(push)
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
	}
	return nil
}

// git returns the trimmed output of a git command in dir, or "" when it
// fails (no git, no repository): the caller has a default.
func git(ctx context.Context, dir string, args ...string) string {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
