package buildkit

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/buildkit/client"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/imagewalk"
)

// readManifests fills res.Manifests from the first OCI tarball output, or
// else from the registry of the first pushed image.
func (o *buildRun) readManifests(ctx context.Context, res *Result) error {
	for _, out := range o.outputs {
		if out.typ == client.ExporterOCI && out.attrs["tar"] != "false" {
			m, err := manifestsFromOCITar(out.path)
			if err != nil {
				return fmt.Errorf("buildkit: reading %s: %w", out.path, err)
			}
			res.Manifests = m
			return nil
		}
	}
	if res.Digest == (v1.Hash{}) {
		return nil
	}
	for _, out := range o.outputs {
		if out.typ == client.ExporterImage && out.attrs["push"] == "true" {
			m, err := manifestsFromRegistry(ctx, out, res.Digest)
			if err != nil {
				return fmt.Errorf("buildkit: reading back %s: %w", out.name, err)
			}
			res.Manifests = m
			return nil
		}
	}
	return nil
}

// platformManifests names each image manifest that top (an OCI layout's
// index.json, or any index) reaches by its platform, through the walk the
// resolver uses too, so both leave attestations out alike.
func platformManifests(top []byte, get imagewalk.Getter) (map[string]v1.Hash, error) {
	ms, err := imagewalk.Walk(top, v1.Hash{}, nil, get)
	if err != nil {
		return nil, err
	}
	out := make(map[string]v1.Hash, len(ms))
	for _, m := range ms {
		out[m.Platform] = m.Descriptor.Digest
	}
	return out, nil
}

// manifestsFromOCITar reads an OCI layout tarball's index.json and the
// index and manifests it reaches.
func manifestsFromOCITar(path string) (map[string]v1.Hash, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blobs := map[string][]byte{} // "index.json" or a hex digest
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg || h.Size > cache.MaxManifestBytes {
			continue
		}
		key := h.Name
		if hex, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok {
			key = hex
		} else if h.Name != "index.json" {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		blobs[key] = b
	}
	get := func(desc v1.Descriptor, _ bool) ([]byte, error) {
		d := desc.Digest
		b, ok := blobs[d.Hex]
		if !ok || d.Algorithm != "sha256" {
			return nil, fmt.Errorf("blob %s is not in the tarball", d)
		}
		return b, nil
	}
	top, ok := blobs["index.json"]
	if !ok {
		return nil, errors.New("no index.json: not an OCI layout tarball")
	}
	return platformManifests(top, get)
}

func manifestsFromRegistry(ctx context.Context, out Output, d v1.Hash) (map[string]v1.Hash, error) {
	var nopts []name.Option
	if out.attrs["registry.insecure"] == "true" {
		nopts = append(nopts, name.Insecure)
	}
	ref, err := name.ParseReference(out.name, nopts...)
	if err != nil {
		return nil, err
	}
	repo := ref.Context()
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	get := func(desc v1.Descriptor, config bool) ([]byte, error) {
		h := desc.Digest
		if !config {
			desc, err := remote.Get(repo.Digest(h.String()), ropts...)
			if err != nil {
				return nil, err
			}
			return desc.Manifest, nil
		}
		l, err := remote.Layer(repo.Digest(h.String()), ropts...)
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(io.LimitReader(rc, cache.MaxManifestBytes))
	}
	top, err := json.Marshal(v1.IndexManifest{Manifests: []v1.Descriptor{{Digest: d, MediaType: "application/vnd.oci.image.index.v1+json"}}})
	if err != nil {
		return nil, err
	}
	return platformManifests(top, get)
}
