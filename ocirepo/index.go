package ocirepo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

const (
	// DefaultIndexTag is the tag at which a Cache keeps its index.
	DefaultIndexTag = "buildcache-index"

	// IndexArtifactType is the artifactType of the index manifest. A tag
	// holding a manifest of another type is never overwritten.
	IndexArtifactType = "application/vnd.buildcache.layercache.v1"

	// BlobMediaType is the media type the index gives each cached blob. It
	// is ORAS's default for arbitrary files, which registries accept in
	// artifact manifests; the blobs themselves may be anything.
	BlobMediaType = types.OCIUncompressedLayer

	// maxIndexBytes is the largest index a Cache writes or reads:
	// a manifest, about 25,000 entries.
	maxIndexBytes = cache.MaxManifestBytes
)

// emptyJSON is the OCI empty descriptor ("{}"): the index's config, and its
// only layer when no blob is cached (registries want at least one layer).
var emptyJSON = func() v1.Descriptor {
	sum := sha256.Sum256([]byte("{}"))
	return v1.Descriptor{
		MediaType: types.OCIEmptyJSON,
		Size:      2,
		Digest:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])},
		Data:      []byte("{}"),
	}
}()

// indexState is one version of the index. It is never modified.
type indexState struct {
	digest  v1.Hash           // of the manifest; zero when the tag does not exist
	etag    string            // the registry's ETag for it, if it gave one
	entries map[v1.Hash]int64 // blob -> size; never nil
}

func (s *indexState) sorted() []v1.Hash {
	ds := make([]v1.Hash, 0, len(s.entries))
	for d := range s.entries {
		ds = append(ds, d)
	}
	slices.SortFunc(ds, func(a, b v1.Hash) int { return cmpHash(a, b) })
	return ds
}

func cmpHash(a, b v1.Hash) int {
	if a.Algorithm != b.Algorithm {
		if a.Algorithm < b.Algorithm {
			return -1
		}
		return 1
	}
	switch {
	case a.Hex < b.Hex:
		return -1
	case a.Hex > b.Hex:
		return 1
	}
	return 0
}

// index returns the current index: one HEAD of the tag, and a GET only when
// its digest is not the version this Cache last saw.
func (c *Cache) index(ctx context.Context) (*indexState, error) {
	var err error
	for range 3 {
		var st *indexState
		if st, err = c.readIndex(ctx); !errors.Is(err, errIndexMoved) {
			return st, err
		}
	}
	return nil, err
}

// errIndexMoved: the revision the tag pointed to vanished before it was
// read (the tag moved and the registry already collected the old one).
var errIndexMoved = errors.New("the index moved while it was read")

func (c *Cache) readIndex(ctx context.Context) (*indexState, error) {
	resp, err := c.client.Do(ctx, regclient.Request{
		Op: "HEAD index", Method: http.MethodHead, Repo: c.repo, Kind: "manifests", Ref: c.tag.TagStr(), Push: true,
		Accept: regclient.ManifestAccept, OK: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return nil, err
	}
	regclient.Drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return &indexState{entries: map[v1.Hash]int64{}}, nil
	}
	etag := resp.Header.Get("ETag")
	d, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		// No digest on HEAD (some registries): read the tag itself.
		st, err := c.loadIndex(ctx, c.tag.TagStr(), v1.Hash{})
		if err != nil {
			return nil, err
		}
		st.etag = etag
		c.setCurrent(st)
		return st, nil
	}
	c.snapMu.Lock()
	cur := c.snap
	c.snapMu.Unlock()
	if cur != nil && cur.digest == d {
		if cur.etag != etag {
			cur = &indexState{digest: cur.digest, etag: etag, entries: cur.entries}
			c.setCurrent(cur)
		}
		return cur, nil
	}
	st, _, err := c.loads.Do(ctx, d, func(ctx context.Context) (*indexState, error) {
		return c.loadIndex(ctx, d.String(), d)
	})
	if err != nil {
		return nil, err
	}
	st = &indexState{digest: st.digest, etag: etag, entries: st.entries}
	c.setCurrent(st)
	return st, nil
}

func (c *Cache) setCurrent(st *indexState) {
	c.snapMu.Lock()
	c.snap = st
	c.snapMu.Unlock()
}

// loadIndex GETs the index manifest by ref (a digest, or the tag when want
// is zero), checks it and parses it.
func (c *Cache) loadIndex(ctx context.Context, ref string, want v1.Hash) (*indexState, error) {
	u := c.client.URL(c.repo, "manifests", ref)
	resp, err := c.client.Do(ctx, regclient.Request{
		Op: "GET index", Method: http.MethodGet, Repo: c.repo, Kind: "manifests", Ref: ref, Push: true,
		Accept: regclient.ManifestAccept, OK: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return nil, err
	}
	defer regclient.Drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		if want.Hex == "" {
			return &indexState{entries: map[v1.Hash]int64{}}, nil
		}
		return nil, errIndexMoved
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxIndexBytes+1))
	if err != nil {
		return nil, &regclient.RemoteError{Op: "GET index", URL: u, Err: err}
	}
	if len(raw) > maxIndexBytes {
		return nil, fmt.Errorf("ocirepo: index %s is over %d bytes", c.tag, maxIndexBytes)
	}
	sum := sha256.Sum256(raw)
	got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if want.Hex != "" && got != want {
		return nil, &regclient.RemoteError{Op: "GET index", URL: u, Err: fmt.Errorf("the registry served bytes that hash to %s", got)}
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil || m.ArtifactType != IndexArtifactType ||
		(m.MediaType != "" && m.MediaType != types.OCIManifestSchema1) {
		what := resp.Header.Get("Content-Type")
		if err == nil && m.ArtifactType != "" {
			what = m.ArtifactType
		}
		return nil, fmt.Errorf("ocirepo: %s holds %q, not a buildcache index: refusing to use or overwrite it (choose another tag with WithIndexTag)", c.tag, what)
	}
	st := &indexState{digest: got, entries: make(map[v1.Hash]int64, len(m.Layers))}
	for _, l := range m.Layers {
		if l.MediaType != BlobMediaType || l.Size < 0 || cache.ValidateDigest(l.Digest) != nil {
			continue // the placeholder for an empty index, or nothing of ours
		}
		st.entries[l.Digest] = l.Size
	}
	return st, nil
}

// encodeIndex renders entries as the index manifest. The same set always
// gives the same bytes, so rewriting an unchanged set is no new revision.
func encodeIndex(entries map[v1.Hash]int64) []byte {
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  IndexArtifactType,
		Config:        emptyJSON,
		Layers:        make([]v1.Descriptor, 0, max(len(entries), 1)),
	}
	st := indexState{entries: entries}
	for _, d := range st.sorted() {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: BlobMediaType, Size: entries[d], Digest: d})
	}
	if len(m.Layers) == 0 {
		m.Layers = append(m.Layers, emptyJSON)
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // a v1.Manifest always marshals
	}
	return b
}
