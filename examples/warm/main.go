// Command warm shows the local store at work with no network at all: it
// generates a two-platform base image as an OCI layout (standing in for a
// registry), then warms a localfs store from it three times — cold, warm,
// and after a blob was damaged on disk — and prints hits, misses and bytes
// copied for each run.
//
//	go run ./examples/warm [-cache DIR] [-mib N]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
)

func main() {
	cacheDir := flag.String("cache", "", "store directory (default: a temporary one, removed at exit)")
	mib := flag.Int64("mib", 64, "approximate size of the generated image, in MiB")
	flag.Parse()
	if err := run(context.Background(), *cacheDir, *mib); err != nil {
		fmt.Fprintln(os.Stderr, "warm:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cacheDir string, mib int64) error {
	work, err := os.MkdirTemp("", "buildcache-warm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if cacheDir == "" {
		cacheDir = filepath.Join(work, "store")
	}

	fmt.Printf("generating a %d MiB linux/amd64 + linux/arm64 image as an OCI layout...\n", mib)
	src, err := makeSource(filepath.Join(work, "source"), mib)
	if err != nil {
		return err
	}
	store, err := localfs.Open(cacheDir)
	if err != nil {
		return err
	}
	defer store.Close()
	fmt.Printf("store: %s\n\n", store.Dir())

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tblobs\thits\tmisses\tcorrupt\tcopied MiB\ttime\t")
	report := func(name string, r result) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.1f\t%v\t\n", name, r.blobs, r.hits, r.misses, r.corrupt,
			float64(r.copied)/(1<<20), r.took.Round(time.Millisecond))
	}

	cold, err := warm(ctx, src, store)
	if err != nil {
		return err
	}
	report("cold", cold)
	again, err := warm(ctx, src, store)
	if err != nil {
		return err
	}
	report("warm", again)

	// Damage one layer behind the store's back, as a full disk or a bad
	// sector would: the next warm must notice and copy that blob again.
	victim, err := largestBlob(ctx, store)
	if err != nil {
		return err
	}
	if err := flipByte(filepath.Join(store.Dir(), "blobs", "sha256", victim.Hex)); err != nil {
		return err
	}
	repaired, err := warm(ctx, src, store)
	if err != nil {
		return err
	}
	report("damaged", repaired)
	tw.Flush()

	rep, err := store.Verify(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\nverify: %d blobs, %.1f MiB checked, %d bad, %d missing\n",
		rep.Checked, float64(rep.Bytes)/(1<<20), len(rep.Bad), len(rep.Missing))
	st := store.Stats()
	fmt.Printf("store stats: hits %d, misses %d, in %.1f MiB, out %.1f MiB, corruptions %d\n",
		st.Hits, st.Misses, float64(st.BytesIn)/(1<<20), float64(st.BytesOut)/(1<<20), st.Corruptions)
	if len(rep.Bad) > 0 || len(rep.Missing) > 0 {
		return errors.New("store failed verification")
	}
	return nil
}

// makeSource writes a two-platform image index to an OCI layout in dir.
func makeSource(dir string, mib int64) (layout.Path, error) {
	var idx v1.ImageIndex = empty.Index
	for _, platform := range []string{"linux/amd64", "linux/arm64"} {
		img, err := random.Image(mib<<20/2/4, 4) // four layers per platform
		if err != nil {
			return "", err
		}
		p, _ := v1.ParsePlatform(platform)
		if img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: p.OS, Architecture: p.Architecture, RootFS: v1.RootFS{Type: "layers"}}); err != nil {
			return "", err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	return layout.Write(dir, idx)
}

type result struct {
	blobs, hits, misses, corrupt int
	copied                       int64
	took                         time.Duration
}

// warm copies every blob of the source layout into the store, unless the
// store already holds a verified copy, and records the source's index as
// the store's roots so GC keeps them.
func warm(ctx context.Context, src layout.Path, store *localfs.Store) (result, error) {
	start := time.Now()
	var r result
	idx, err := src.ImageIndex()
	if err != nil {
		return r, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return r, err
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return r, err
		}
		blobs, err := imageBlobs(img)
		if err != nil {
			return r, err
		}
		for _, b := range append(blobs, desc) {
			r.blobs++
			switch err := check(ctx, store, b.Digest); {
			case err == nil:
				r.hits++
				continue
			case errors.Is(err, cache.ErrCorrupt):
				r.corrupt++
			case errors.Is(err, cache.ErrNotFound):
				r.misses++
			default:
				return r, err
			}
			f, err := os.Open(filepath.Join(string(src), "blobs", b.Digest.Algorithm, b.Digest.Hex))
			if err != nil {
				return r, err
			}
			err = store.Put(ctx, b.Digest, b.Size, f)
			f.Close()
			if err != nil {
				return r, err
			}
			r.copied += b.Size
		}
	}
	err = store.UpdateIndex(ctx, func(dst *v1.IndexManifest) error {
		dst.Manifests = im.Manifests
		return nil
	})
	r.took = time.Since(start)
	return r, err
}

// check reads a blob through the store's verifying reader: nil means a
// good copy is cached, ErrCorrupt means a bad one was found and removed.
func check(ctx context.Context, store *localfs.Store, d v1.Hash) error {
	rc, err := store.Get(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

func imageBlobs(img v1.Image) ([]v1.Descriptor, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	return append([]v1.Descriptor{m.Config}, m.Layers...), nil
}

func largestBlob(ctx context.Context, store *localfs.Store) (v1.Hash, error) {
	var best v1.Hash
	var bestSize int64 = -1
	err := store.Walk(ctx, func(d v1.Hash, size int64) error {
		if size > bestSize {
			best, bestSize = d, size
		}
		return nil
	})
	return best, err
}

func flipByte(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 1000); err != nil {
		return err
	}
	b[0] ^= 0xff
	_, err = f.WriteAt(b, 1000)
	return err
}
