package registry

// Calls a mirror makes that ask the registry and store nothing: whether a
// repository holds a digest (HeadBlob, HeadManifest), and content the
// store cannot keep (sha512 digests: a store keeps one sha256 name per
// blob), verified as it is read (OpenBlob, GetManifest). They take any
// digest cache.ValidateContentDigest accepts, and go through the same
// client (bounds, retries, timeouts, auth) as a pull.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
	"github.com/buildcache/buildcache/regclient"
)

// HeadBlob asks the registry, with one HEAD under repo's name and
// credentials, whether repo ("registry:5000/team/app") holds blob d, and
// describes it (its size, -1 when the registry does not say). A registry
// that does not hold d there answers a *regclient.RemoteError with its
// status (404; 401 or 403 for a repository the credentials cannot read).
func (r *Resolver) HeadBlob(ctx context.Context, repo string, d v1.Hash) (v1.Descriptor, error) {
	return r.headDigest(ctx, repo, "blobs", d)
}

// HeadManifest is HeadBlob for a manifest or index by digest; the
// descriptor has the media type the registry gives.
func (r *Resolver) HeadManifest(ctx context.Context, repo string, d v1.Hash) (v1.Descriptor, error) {
	return r.headDigest(ctx, repo, "manifests", d)
}

func (r *Resolver) headDigest(ctx context.Context, repo, kind string, d v1.Hash) (v1.Descriptor, error) {
	rp, err := contentRepo(repo, d)
	if err != nil {
		return v1.Descriptor{}, err
	}
	req := regclient.Request{Method: http.MethodHead, Repo: rp, Kind: kind, Ref: d.String()}
	if kind == "manifests" {
		req.Accept = regclient.ManifestAccept
	}
	resp, err := r.client.Do(ctx, req)
	if err != nil {
		return v1.Descriptor{}, regclient.MarkOffline(err)
	}
	resp.Body.Close()
	return v1.Descriptor{Digest: d, Size: resp.ContentLength, MediaType: types.MediaType(resp.Header.Get("Content-Type"))}, nil
}

// OpenBlob GETs blob d of repo and returns its body unstored, with its
// size (-1 when the registry does not state it). The body is verified as
// it is read: its Read returns io.EOF only once all of it hashed to d
// with d's algorithm and had the stated size, and an error wrapping
// cache.ErrDigestMismatch otherwise. It reads at most 1 TiB, the bound of
// every blob download. The caller closes it.
func (r *Resolver) OpenBlob(ctx context.Context, repo string, d v1.Hash) (io.ReadCloser, int64, error) {
	rp, err := contentRepo(repo, d)
	if err != nil {
		return nil, 0, err
	}
	resp, err := r.client.Do(ctx, regclient.Request{Method: http.MethodGet, Repo: rp, Kind: "blobs", Ref: d.String()})
	if err != nil {
		return nil, 0, regclient.MarkOffline(err)
	}
	size := resp.ContentLength
	if size > maxBlobBytes {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("registry: %s: blob %s claims %d bytes, more than the %d a blob may have", repo, d, size, int64(maxBlobBytes))
	}
	body := &countingBody{r: io.LimitReader(resp.Body, maxBlobBytes+1), total: &r.stats.bytes, tally: tallyOf(ctx)}
	return verifiedBody{Reader: verify.NewReader(body, d, size, cache.ErrDigestMismatch), Closer: resp.Body}, size, nil
}

type verifiedBody struct {
	io.Reader
	io.Closer
}

// GetManifest GETs manifest or index d of repo and returns it unstored,
// verified against d with d's algorithm, with its media type (its own
// mediaType field, else the registry's Content-Type). It reads at most
// cache.MaxManifestBytes.
func (r *Resolver) GetManifest(ctx context.Context, repo string, d v1.Hash) (v1.Descriptor, []byte, error) {
	rp, err := contentRepo(repo, d)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	resp, err := r.client.Do(ctx, regclient.Request{Method: http.MethodGet, Repo: rp, Kind: "manifests", Ref: d.String(), Accept: regclient.ManifestAccept})
	if err != nil {
		return v1.Descriptor{}, nil, regclient.MarkOffline(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, cache.MaxManifestBytes+1))
	if err != nil {
		return v1.Descriptor{}, nil, &regclient.RemoteError{Op: "GET manifest", URL: r.client.URL(rp, "manifests", d.String()), Err: err}
	}
	if len(b) > cache.MaxManifestBytes {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: manifest %s@%s is larger than %d bytes", repo, d, cache.MaxManifestBytes)
	}
	r.stats.bytes.Add(uint64(len(b)))
	if err := verify.NewReader(bytes.NewReader(b), d, int64(len(b)), cache.ErrDigestMismatch).Drain(); err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: %s served bytes that are not manifest %s: %w", repo, d, err)
	}
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("registry: %s@%s is not a JSON manifest: %w", repo, d, err)
	}
	mt := cmp.Or(m.MediaType, types.MediaType(resp.Header.Get("Content-Type")))
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}, b, nil
}

// contentRepo checks a pass-through call's arguments.
func contentRepo(repo string, d v1.Hash) (name.Repository, error) {
	if err := cache.ValidateContentDigest(d); err != nil {
		return name.Repository{}, err
	}
	rp, err := name.NewRepository(repo)
	if err != nil {
		return name.Repository{}, fmt.Errorf("registry: invalid repository %q: %w", repo, err)
	}
	return rp, nil
}
