package registry

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

// records ref. known, if set, is the digest a HEAD just returned; force
// downloads blobs even if they are stored (cache bypass).
func (r *Resolver) pull(ctx context.Context, ref name.Reference, known *v1.Descriptor, platforms []string, force bool) (*cache.ResolvedImage, error) {
	ctx, release, err := r.lease(ctx) // until the root is recorded: records.go
	if err != nil {
		return nil, err
	}
	defer release()
	repo := ref.Context()
	id := ref.Identifier()
	if known != nil {
		id = known.Digest.String() // the content HEAD saw, even if the tag moves again
	}
	top, topRaw, err := r.getManifest(ctx, repo, id)
	if known == nil {
		r.notFound.note(ref.Name(), err)
	}
	if err != nil {
		return nil, err
	}
	if dref, ok := ref.(name.Digest); ok && top.Digest.String() != dref.DigestStr() {
		return nil, fmt.Errorf("registry: %s served a manifest with digest %s: %w", ref, top.Digest, cache.ErrDigestMismatch)
	}
	if err := r.admit(ctx, ref, top.Digest, sigFresh); err != nil { // before anything of it is downloaded
		return nil, err
	}
	get := func(d v1.Descriptor, config bool) ([]byte, error) {
		if config {
			return r.fetchConfig(ctx, repo, d, force)
		}
		return r.fetchManifest(ctx, repo, d, force)
	}
	manifests, err := r.platformManifests(top.Digest, topRaw, platforms, get)
	if err != nil {
		return nil, err
	}
	if err := r.fetchBlobs(ctx, ref, manifests, force); err != nil {
		return nil, err
	}
	// Manifests go in after their blobs, so a stored manifest means its
	// blobs are stored (and complete() checks them all anyway, as a crash
	// may keep a manifest and lose a blob whose rename was not synced).
	// Then, before the root is recorded, one sync makes every rename
	// durable: the root never points to blobs a crash could take back.
	var g errgroup.Group
	for _, pm := range manifests {
		g.Go(func() error { return r.putBytes(ctx, pm.desc.Digest, pm.raw) })
	}
	g.Go(func() error { return r.putBytes(ctx, top.Digest, topRaw) })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := r.syncBlobs(ctx); err != nil {
		return nil, err
	}
	if err := r.rememberComplete(ctx, ref.Name(), top, platforms); err != nil {
		return nil, err
	}
	r.stats.pulled.Add(1)
	return &cache.ResolvedImage{Digest: top.Digest, Manifests: manifestMap(manifests), Source: cache.Pulled}, nil
}

// put stores a blob for a pull, deferring its sync to the pull's
// SyncBlobs when the store can.
func (r *Resolver) put(ctx context.Context, d v1.Hash, size int64, body io.Reader) error {
	if ds, ok := cache.As[cache.DeferredSyncer](r.store); ok {
		return ds.PutDeferred(ctx, d, size, body)
	}
	return r.store.Put(ctx, d, size, body)
}

func (r *Resolver) putBytes(ctx context.Context, d v1.Hash, b []byte) error {
	return r.put(ctx, d, int64(len(b)), bytes.NewReader(b))
}

// fetchManifest returns manifest or index d, which an index lists, from
// the store or else the registry, reading no more than its stated size.
func (r *Resolver) fetchManifest(ctx context.Context, repo name.Repository, d v1.Descriptor, force bool) ([]byte, error) {
	if d.Size <= 0 || d.Size > cache.MaxManifestBytes {
		return nil, fmt.Errorf("registry: %s: manifest %s is listed with size %d, not 1 to %d bytes", repo, d.Digest, d.Size, cache.MaxManifestBytes)
	}
	if !force {
		if b, err := r.readBlob(ctx, d.Digest, d.Size); err == nil {
			return b, nil
		}
	}
	desc, b, err := r.getManifestLimit(ctx, repo, d.Digest.String(), d.Size)
	if err == nil && desc.Digest != d.Digest {
		err = fmt.Errorf("registry: %s served %s for %s: %w", repo, desc.Digest, d.Digest, cache.ErrDigestMismatch)
	}
	return b, err
}

// getManifest GETs a manifest and checks it against the digest the
// registry claims and, for a digest reference, the one asked for. It
// reads at most cache.MaxManifestBytes.
func (r *Resolver) getManifest(ctx context.Context, repo name.Repository, id string) (v1.Descriptor, []byte, error) {
	return r.getManifestLimit(ctx, repo, id, cache.MaxManifestBytes)
}

// getManifestLimit is getManifest reading at most limit bytes: the size an
// index states, or cache.MaxManifestBytes.
func (r *Resolver) getManifestLimit(ctx context.Context, repo name.Repository, id string, limit int64) (v1.Descriptor, []byte, error) {
	resp, err := r.client.Do(ctx, regclient.Request{Method: http.MethodGet, Repo: repo, Kind: "manifests", Ref: id, Accept: regclient.ManifestAccept})
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return v1.Descriptor{}, nil, &regclient.RemoteError{Op: "GET manifest", URL: r.client.URL(repo, "manifests", id), Err: err}
	}
	if int64(len(b)) > limit {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: manifest %s@%s is larger than %d bytes", repo, id, limit)
	}
	r.stats.blobs.Add(1)
	r.stats.bytes.Add(uint64(len(b)))
	tallyOf(ctx).add(1, int64(len(b)))
	d, _, _ := v1.SHA256(bytes.NewReader(b))
	if claimed := resp.Header.Get("Docker-Content-Digest"); claimed != "" && claimed != d.String() {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: %s@%s: registry says %s, bytes hash to %s: %w", repo, id, claimed, d, cache.ErrDigestMismatch)
	}
	if strings.HasPrefix(id, "sha256:") && id != d.String() {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: %s@%s: bytes hash to %s: %w", repo, id, d, cache.ErrDigestMismatch)
	}
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: %s@%s is not a JSON manifest: %w", repo, id, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.MediaType(resp.Header.Get("Content-Type"))
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}, b, nil
}

// fetchConfig downloads image config d into the store, bounded by the
// size its manifest states, and returns it.
func (r *Resolver) fetchConfig(ctx context.Context, repo name.Repository, d v1.Descriptor, force bool) ([]byte, error) {
	if err := checkBlobSize("config", d, maxConfigBytes); err != nil {
		return nil, fmt.Errorf("registry: %s: %w", repo, err)
	}
	if err := r.fetchBlob(ctx, repo, d, force, nil); err != nil {
		return nil, err
	}
	return r.readBlob(ctx, d.Digest, maxConfigBytes)
}

// Bounds on what a pull downloads, besides cache.MaxManifestBytes (the package
// doc, # Bounds, states them).
const (
	// maxConfigBytes bounds an image config, which is read into memory.
	// Configs are a few KiB (their history grows a line per layer); one of
	// several MiB is a mistake or an attack.
	maxConfigBytes = 8 << 20
	// maxBlobBytes bounds the size a descriptor may state for a layer:
	// the largest layers in use (CUDA, model weights) are tens of GiB, and
	// a claim beyond 1 TiB is a lie, refused before any request.
	maxBlobBytes = 1 << 40
)

// smallBlob is the size up to which a blob (a config, a tiny layer) is
// fetched in a lane of its own: such a download is a round trip more than
// a transfer, and should neither wait for a slot behind large layers nor
// hold one.
const smallBlob = 1 << 20

// fetchBlobs downloads the blobs of manifests that the store lacks, in
// parallel, and reports progress. Large blobs go largest first, at most
// concurrency (WithConcurrency) at a time, so the longest download starts
// at once and the pull ends with the short ones; small blobs go
// alongside, also at most concurrency at a time.
func (r *Resolver) fetchBlobs(ctx context.Context, ref name.Reference, manifests []platformManifest, force bool) error {
	var todo []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, pm := range manifests {
		for _, b := range pm.blobs {
			if seen[b.Digest] {
				continue
			}
			seen[b.Digest] = true
			if !force {
				if size, err := r.store.Stat(ctx, b.Digest); err == nil && size == b.Size {
					continue
				}
			}
			todo = append(todo, b)
		}
	}
	slices.SortStableFunc(todo, func(a, b v1.Descriptor) int { return cmp.Compare(b.Size, a.Size) })
	prog := newProgressReporter(ref.Name(), todo, r.o.progress)
	split, _ := slices.BinarySearchFunc(todo, smallBlob, func(d v1.Descriptor, n int64) int { return cmp.Compare(n, d.Size) })
	g, gctx := errgroup.WithContext(ctx)
	lane := func(blobs []v1.Descriptor) error {
		l, lctx := errgroup.WithContext(gctx)
		l.SetLimit(r.o.concurrency)
		var skipped error // why blobs were left out, if they were
		for _, b := range blobs {
			if skipped = context.Cause(lctx); skipped != nil {
				break
			}
			l.Go(func() error {
				if err := r.fetchBlob(lctx, ref.Context(), b, force, prog); err != nil {
					return err
				}
				prog.blobDone()
				return nil
			})
		}
		if err := l.Wait(); err != nil {
			return err
		}
		return skipped
	}
	g.Go(func() error { return lane(todo[:split]) })
	g.Go(func() error { return lane(todo[split:]) })
	return g.Wait()
}

// fetchBlob downloads one blob into the store, verified by the store's
// Put, which reads no more than desc.Size bytes. Concurrent fetches of one
// digest share one download. A connection cut mid-blob is retried.
func (r *Resolver) fetchBlob(ctx context.Context, repo name.Repository, desc v1.Descriptor, force bool, prog *progressReporter) error {
	if err := checkBlobSize("blob", desc, maxBlobBytes); err != nil {
		// Callers check first; this keeps any download from being unbounded.
		return fmt.Errorf("registry: %s: %w", repo, err)
	}
	_, _, err := r.blobs.Do(ctx, desc.Digest.String(), func(ctx context.Context) (struct{}, error) {
		if !force {
			if _, err := r.store.Stat(ctx, desc.Digest); err == nil {
				return struct{}{}, nil
			}
		}
		// Do retried what it could; a connection cut mid-blob is tried again here.
		return struct{}{}, r.client.Retry(ctx, func() error { return r.downloadBlob(ctx, repo, desc, force, prog) })
	})
	return err
}

func (r *Resolver) downloadBlob(ctx context.Context, repo name.Repository, desc v1.Descriptor, force bool, prog *progressReporter) error {
	resp, err := r.client.Do(ctx, regclient.Request{Method: http.MethodGet, Repo: repo, Kind: "blobs", Ref: desc.Digest.String()})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if force {
		_ = r.store.Delete(ctx, desc.Digest) // bypass: replace what is there
	}
	body := &countingBody{r: resp.Body, prog: prog, total: &r.stats.bytes, tally: tallyOf(ctx)}
	err = r.put(ctx, desc.Digest, desc.Size, body)
	if err != nil {
		var re *regclient.RemoteError
		if !errors.Is(err, cache.ErrDigestMismatch) && !errors.As(err, &re) && body.readErr != nil && ctx.Err() == nil {
			// The connection broke mid-blob: report it as the registry's.
			return &regclient.RemoteError{Op: "GET blob", URL: r.client.URL(repo, "blobs", desc.Digest.String()), Err: err}
		}
		if errors.Is(err, cache.ErrDigestMismatch) {
			return fmt.Errorf("registry: %s served bytes that are not blob %s: %w", repo, desc.Digest, err)
		}
		return err
	}
	r.stats.blobs.Add(1)
	body.tally.add(1, 0)
	return nil
}

type countingBody struct {
	r       io.Reader
	prog    *progressReporter
	total   *atomic.Uint64
	tally   *tally // this resolve's, or nil
	readErr error
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.total.Add(uint64(n))
		c.tally.add(0, int64(n))
		c.prog.add(int64(n))
	}
	if err != nil && err != io.EOF {
		c.readErr = err
	}
	return n, err
}
