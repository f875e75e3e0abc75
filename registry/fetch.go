package registry

// The calls a registry mirror (package mirror) makes: a tag resolved to
// its top manifest alone, and single manifests and blobs brought into the
// store by digest, when a client asks for them. They go through the same
// client (bounds, retries, timeouts, auth), flight group and leases as a
// pull.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

// TopManifest is what ResolveTop found: the top manifest (an index, or a
// single image's manifest) a reference points to, which is in the store.
type TopManifest struct {
	Descriptor v1.Descriptor // digest, size and media type
	Source     cache.Source
	// RemoteErr is the upstream failure behind a Stale or Reserved answer.
	RemoteErr error
}

// ResolveTop resolves ref to its top manifest and stores that manifest
// only: an index's platform manifests and blobs are left for FetchManifest
// and StreamBlob, when a client asks for them. The tag's policy is
// PullAlways with maxAge (0: one HEAD on every call): a stored top is
// revalidated with one HEAD, fetched again only when the tag moved, and
// served Stale when the upstream fails (stale-if-error) or Reserved when
// the rate-limit reserve holds requests back. The reference is recorded
// as a root of the store's index, as Resolve records it; a later Resolve
// of it pulls whatever platforms it needs that the store lacks.
//
// Concurrent calls for one reference make one set of requests.
func (r *Resolver) ResolveTop(ctx context.Context, ref string, maxAge time.Duration) (*TopManifest, error) {
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("registry: invalid image reference %q: %w", ref, err)
	}
	key := fmt.Sprintf("top|%s|%v", parsed.Name(), maxAge)
	ctx = context.WithValue(ctx, signaturesServed{}, true) // verify.go
	res, _, err := r.resolves.Do(ctx, key, func(ctx context.Context) (*cache.ResolvedImage, error) {
		res, err := r.resolveTop(ctx, parsed, maxAge)
		if err == nil {
			err = r.admitResolved(ctx, parsed, res, true)
		}
		if err == nil {
			err = r.keepWith(ctx, parsed, res, true)
		}
		return res, err
	})
	if err != nil {
		return nil, err
	}
	desc, ok := r.localDescriptor(ctx, res.Digest)
	if !ok {
		return nil, fmt.Errorf("registry: %s: top manifest %s: %w", ref, res.Digest, cache.ErrNotFound)
	}
	return &TopManifest{Descriptor: desc, Source: res.Source, RemoteErr: res.RemoteErr}, nil
}

func (r *Resolver) resolveTop(ctx context.Context, ref name.Reference, maxAge time.Duration) (*cache.ResolvedImage, error) {
	refName := ref.Name()
	host := ref.Context().RegistryStr()
	ctx, t := withTally(ctx)
	why := cache.Explanation{Policy: cache.PullAlways, MaxAge: maxAge}
	var local *cache.ResolvedImage
	if dref, ok := ref.(name.Digest); ok {
		d, err := cache.ParseDigest(dref.DigestStr())
		if err != nil {
			return nil, err
		}
		if _, err := r.store.Stat(ctx, d); err == nil {
			r.stats.hits.Add(1)
			return &cache.ResolvedImage{Digest: d, Source: cache.Hit}, nil // immutable: no request
		}
		if err := r.rememberedNotFound(refName); err != nil {
			return nil, err
		}
		return r.fetchTop(ctx, ref, nil)
	}
	rec, err := r.lookup(ctx, refName)
	if err != nil {
		return nil, err
	}
	if rec != nil {
		if _, err := r.store.Stat(ctx, rec.desc.Digest); err == nil {
			local = &cache.ResolvedImage{Digest: rec.desc.Digest}
		}
	}
	served, release, err := r.askFleetTop(ctx, refName, &rec, &local, maxAge)
	if served || err != nil {
		return local, err
	}
	defer func() {
		if local == nil {
			release() // failed with nothing to serve: let another process try now
		}
	}()
	if local == nil {
		if err := r.rememberedNotFound(refName); err != nil {
			return nil, err
		}
		if err := r.refuseHeld(refName, host); err != nil {
			return nil, err
		}
		return r.fetchTop(ctx, ref, nil)
	}
	if maxAge > 0 && r.o.now().Sub(rec.lastChecked()) < maxAge {
		r.stats.hits.Add(1)
		local.Source = cache.Hit
		return local, nil
	}
	if err := r.rememberedNotFound(refName); err != nil {
		return nil, err
	}
	ctx = regclient.WithFallback(ctx, r.o.staleBudget) // the stored top is the fallback
	head, err := r.head(ctx, ref, func() bool { reason, _ := r.hold(host); return reason == "" })
	switch {
	case errors.Is(err, errHeadNoDigest):
		holdReason, until := r.hold(host)
		return r.reserved(local, why, t, holdReason+": served the cached copy", until, nil)
	case err != nil && r.o.reserve >= 0 && tooManyRequests(err):
		reason, until := r.held429(host)
		return r.reserved(local, why, t, reason+": served the cached copy", until, err)
	case err != nil:
		return r.staleOr(ctx, refName, local, why, t, err)
	}
	if head.Digest == rec.desc.Digest {
		if err := r.revalidated(ctx, refName, rec); err != nil {
			return nil, err
		}
		r.stats.revalidated.Add(1)
		local.Source = cache.Revalidated
		return local, nil
	}
	res, err := r.fetchTop(ctx, ref, head)
	if err != nil {
		return r.staleOr(ctx, refName, local, why, t, err)
	}
	return res, nil
}

// fetchTop GETs ref's top manifest (known's digest, if a HEAD gave one),
// stores it and records ref -> it.
func (r *Resolver) fetchTop(ctx context.Context, ref name.Reference, known *v1.Descriptor) (*cache.ResolvedImage, error) {
	ctx, release, err := r.lease(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	id := ref.Identifier()
	if known != nil {
		id = known.Digest.String()
	}
	top, raw, err := r.getManifest(ctx, ref.Context(), id)
	if known == nil {
		r.notFound.note(ref.Name(), err)
	}
	if err != nil {
		return nil, regclient.MarkOffline(err)
	}
	if err := r.admit(ctx, ref, top.Digest, sigFresh); err != nil {
		return nil, err
	}
	if err := r.putBytes(ctx, top.Digest, raw); err != nil {
		return nil, err
	}
	if err := r.syncBlobs(ctx); err != nil {
		return nil, err
	}
	if _, isDigest := ref.(name.Digest); !isDigest {
		if err := r.remember(ctx, ref.Name(), top); err != nil {
			return nil, err
		}
	}
	r.stats.pulled.Add(1)
	return &cache.ResolvedImage{Digest: top.Digest, Source: cache.Pulled}, nil
}

// FetchManifest makes sure manifest or index d of repo
// ("registry:5000/team/app") is in the store, fetching it from the
// registry if it is not, and describes it. Only bytes that hash to d are
// stored; at most 4 MiB are read.
func (r *Resolver) FetchManifest(ctx context.Context, repo string, d v1.Hash) (v1.Descriptor, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return v1.Descriptor{}, err
	}
	rp, err := name.NewRepository(repo)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("registry: invalid repository %q: %w", repo, err)
	}
	if desc, ok := r.localDescriptor(ctx, d); ok {
		return desc, nil
	}
	_, _, err = r.blobs.Do(ctx, d.String(), func(ctx context.Context) (struct{}, error) {
		ctx, release, err := r.lease(ctx)
		if err != nil {
			return struct{}{}, err
		}
		defer release()
		_, raw, err := r.getManifest(ctx, rp, d.String()) // checks the bytes hash to d
		if err != nil {
			return struct{}{}, err
		}
		if err := r.putBytes(ctx, d, raw); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, r.syncBlobs(ctx)
	})
	if err != nil {
		return v1.Descriptor{}, err
	}
	desc, ok := r.localDescriptor(ctx, d)
	if !ok {
		return v1.Descriptor{}, fmt.Errorf("registry: %s@%s: fetched but not in the store: %w", repo, d, cache.ErrNotFound)
	}
	return desc, nil
}

// StreamBlob makes sure blob d of repo ("registry:5000/team/app") is in
// the store, for a mirror that serves the blob while it is downloaded.
// size is the blob's size when the caller knows it (from a manifest it
// served; -1 if not): the upstream's answer must agree, a body without a
// Content-Length is read to that size and no further, and the sink is
// called with it. Once the upstream's GET answers with the blob's size,
// and before any byte is read, sink is called with that size; the writer
// it returns gets every byte as the store's Put reads it, so the bytes
// are hashed and stored while the sink serves them. A writer that also
// has Commit(ctx) error is the store's own ingestion of d (a
// cache.Ingestion, or one wrapping it): the bytes are written to it
// alone, once, and its Commit verifies and stores them. StreamBlob
// returns nil only when the store holds d, synced, and the bytes written
// to the sink were exactly size bytes hashing to d; on any error nothing
// is stored. A sink that fails a write fails the fetch.
//
// sink is not called, and StreamBlob returns nil once d is stored, when d
// is stored already, when the call joined another fetch of d in flight (a
// pull's, or another StreamBlob's: one download per digest), or when
// neither the caller nor the upstream's answer gives a size: such a blob
// is stored whole first, at most 1 TiB and within the store's budget and
// free-space floor, and is then the store's to serve; cancel ctx to stop
// it. A download that breaks is not retried: its first bytes may have
// been served already. It costs one GET, no HEAD.
func (r *Resolver) StreamBlob(ctx context.Context, repo string, d v1.Hash, size int64, sink func(size int64) (io.Writer, error)) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	rp, err := name.NewRepository(repo)
	if err != nil {
		return fmt.Errorf("registry: invalid repository %q: %w", repo, err)
	}
	if _, err := r.store.Stat(ctx, d); err == nil {
		return nil
	}
	_, _, err = r.blobs.Do(ctx, d.String(), func(ctx context.Context) (struct{}, error) {
		if _, err := r.store.Stat(ctx, d); err == nil {
			return struct{}{}, nil
		}
		ctx, release, err := r.lease(ctx)
		if err != nil {
			return struct{}{}, err
		}
		defer release()
		if err := r.streamBlob(ctx, rp, d, size, sink); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, r.syncBlobs(ctx)
	})
	return err
}

func (r *Resolver) streamBlob(ctx context.Context, repo name.Repository, d v1.Hash, size int64, sink func(int64) (io.Writer, error)) error {
	resp, err := r.client.Do(ctx, regclient.Request{Method: http.MethodGet, Repo: repo, Kind: "blobs", Ref: d.String()})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := &countingBody{r: resp.Body, total: &r.stats.bytes, tally: tallyOf(ctx)}
	desc := v1.Descriptor{Digest: d, Size: resp.ContentLength}
	switch {
	case size >= 0 && desc.Size >= 0 && desc.Size != size:
		return fmt.Errorf("registry: %s: blob %s is %d bytes, the upstream says %d: %w", repo, d, size, desc.Size, cache.ErrDigestMismatch)
	case desc.Size < 0 && size < 0:
		// Size unknown: no response can be promised its Content-Length,
		// so store it first; a longer body fails the store's hash check.
		err = r.put(ctx, d, -1, io.LimitReader(body, maxBlobBytes))
		return r.blobFetched(ctx, repo, d, body, err)
	}
	desc.Size = max(desc.Size, size)
	if err := checkBlobSize("blob", desc, maxBlobBytes); err != nil {
		return fmt.Errorf("registry: %s: %w", repo, err)
	}
	w, err := sink(desc.Size)
	if err != nil {
		return err
	}
	if c, ok := w.(interface{ Commit(context.Context) error }); ok {
		// The store's own ingestion: it checks size and digest itself.
		buf := make([]byte, 256<<10)
		if _, err = io.CopyBuffer(w, io.LimitReader(body, desc.Size+1), buf); err == nil {
			err = c.Commit(ctx)
		}
		return r.blobFetched(ctx, repo, d, body, err)
	}
	h, err := v1.Hasher(d.Algorithm)
	if err != nil {
		return err
	}
	tee := &hashingWriter{w: w, h: h}
	err = r.put(ctx, d, desc.Size, io.TeeReader(io.LimitReader(body, desc.Size+1), tee))
	if err == nil && tee.n < desc.Size {
		// The store had d already and did not read all of it: the sink
		// still gets the rest, hashed below.
		_, err = io.Copy(tee, io.LimitReader(body, desc.Size-tee.n))
	}
	if err == nil && (tee.n != desc.Size || hex.EncodeToString(h.Sum(nil)) != d.Hex) {
		err = fmt.Errorf("registry: %s: the %d bytes streamed are not blob %s: %w", repo, tee.n, d, cache.ErrDigestMismatch)
	}
	return r.blobFetched(ctx, repo, d, body, err)
}

// blobFetched counts a download that succeeded and names the error of one
// that did not as downloadBlob does.
func (r *Resolver) blobFetched(ctx context.Context, repo name.Repository, d v1.Hash, body *countingBody, err error) error {
	if err == nil {
		r.stats.blobs.Add(1)
		body.tally.add(1, 0)
		return nil
	}
	var re *regclient.RemoteError
	switch {
	case errors.Is(err, cache.ErrDigestMismatch):
		return fmt.Errorf("registry: %s served bytes that are not blob %s: %w", repo, d, err)
	case !errors.As(err, &re) && body.readErr != nil && ctx.Err() == nil:
		return &regclient.RemoteError{Op: "GET blob", URL: r.client.URL(repo, "blobs", d.String()), Err: err}
	}
	return err
}

// hashingWriter passes bytes on to w and hashes those w took.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

// syncBlobs makes the blobs put so far durable, for stores that defer it.
func (r *Resolver) syncBlobs(ctx context.Context) error {
	if ds, ok := cache.As[cache.DeferredSyncer](r.store); ok {
		return ds.SyncBlobs(ctx)
	}
	return nil
}
