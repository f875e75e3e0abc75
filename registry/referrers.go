package registry

// An image's referrers (OCI 1.1: the manifests whose subject is the
// image: signatures, attestations, SBOMs), from the registry's referrers
// API or, where it has none, from the referrers tag schema's
// "sha256-<hex>" tag, kept in the store as that tag would be: an index
// recorded as the root "<repo>:sha256-<hex>", marked with its subject
// (cache.AnnotationSubject) so that it lives as long as the image does.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

// ReferrersList is what Referrers found.
type ReferrersList struct {
	// Index lists every referrer known, of every artifact type, as an
	// OCI image index (a caller filters by artifact type).
	Index v1.IndexManifest
	// Source is Pulled when the registry was asked, Hit when a stored
	// list younger than maxAge was served with no request, Stale when the
	// registry failed and the stored list was served.
	Source cache.Source
	// FromTag is whether the list came from the referrers tag schema's
	// tag: the registry has no referrers API.
	FromTag bool
	// RemoteErr is the registry's failure behind a Stale list.
	RemoteErr error
}

// maxReferrerPages bounds the pages of a referrers list followed through
// Link headers: each is an index of at most cache.MaxManifestBytes.
const maxReferrerPages = 16

// Referrers lists the referrers of subject (a manifest or index digest)
// in repo ("registry:5000/team/app"): with one GET of the registry's
// referrers API (GET /v2/<name>/referrers/<digest>, its pages followed),
// or, when the registry answers that it has none (404, 400 or 405), one
// GET of the referrers tag schema's tag "sha256-<hex>" (none: no
// referrers). The list is stored and recorded as the root
// "<repo>:sha256-<hex>", kept while subject is (cache.AnnotationSubject),
// and served from the store with no request when it was fetched less
// than maxAge ago, or when the registry fails (Stale, within the stale
// budget, as a tag is). Only the list is fetched: the referrers' own
// manifests are fetched when asked for by digest. Concurrent calls for
// one subject make one request.
func (r *Resolver) Referrers(ctx context.Context, repo string, subject v1.Hash, maxAge time.Duration) (*ReferrersList, error) {
	if err := cache.ValidateContentDigest(subject); err != nil {
		return nil, err
	}
	rp, err := name.NewRepository(repo)
	if err != nil {
		return nil, fmt.Errorf("registry: invalid repository %q: %w", repo, err)
	}
	key := fmt.Sprintf("%s|%s|%v", rp.Name(), subject, maxAge)
	list, _, err := r.referrerFlights.Do(ctx, key, func(ctx context.Context) (*ReferrersList, error) {
		return r.referrers(ctx, rp, subject, maxAge)
	})
	if err != nil {
		return nil, err
	}
	out := *list // each caller gets its own copy
	out.Index.Manifests = slices.Clone(list.Index.Manifests)
	return &out, nil
}

func (r *Resolver) referrers(ctx context.Context, rp name.Repository, subject v1.Hash, maxAge time.Duration) (*ReferrersList, error) {
	tag := rp.Tag(referrersTag(subject)).Name()
	rec, err := r.lookup(ctx, tag)
	if err != nil {
		return nil, err
	}
	var stored *ReferrersList
	if rec != nil {
		if raw, err := r.readBlob(ctx, rec.desc.Digest, cache.MaxManifestBytes); err == nil {
			stored, _ = parseReferrers(raw)
		}
	}
	if stored != nil && maxAge > 0 && r.o.now().Sub(rec.lastChecked()) < maxAge {
		stored.Source = cache.Hit
		return stored, nil
	}
	if stored != nil {
		ctx = regclient.WithFallback(ctx, r.o.staleBudget) // the stored list is the fallback
	}
	raw, fromTag, err := r.fetchReferrers(ctx, rp, subject)
	if err != nil {
		var re *regclient.RemoteError
		if stored != nil && r.o.staleIfError && ctx.Err() == nil && errors.As(err, &re) && re.Temporary() {
			r.stats.stale.Add(1)
			stored.Source, stored.RemoteErr = cache.Stale, err
			return stored, nil
		}
		return nil, regclient.MarkOffline(err)
	}
	list, err := parseReferrers(raw)
	if err != nil {
		return nil, fmt.Errorf("registry: the referrers of %s@%s: %w", rp, subject, err)
	}
	list.Source, list.FromTag = cache.Pulled, fromTag
	d, _, _ := v1.SHA256(bytes.NewReader(raw))
	if rec != nil && rec.desc.Digest == d {
		return list, r.revalidated(ctx, tag, rec)
	}
	ctx, release, err := r.lease(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := r.putBytes(ctx, d, raw); err != nil {
		return nil, err
	}
	if err := r.syncBlobs(ctx); err != nil {
		return nil, err
	}
	return list, r.remember(ctx, tag, v1.Descriptor{MediaType: types.OCIImageIndex, Digest: d, Size: int64(len(raw))})
}

// fetchReferrers asks the registry for subject's referrers: the
// referrers API, else the tag schema's tag. It returns the list as an
// OCI index (the tag's own bytes, or the API's pages as one index), and
// whether it came from the tag.
func (r *Resolver) fetchReferrers(ctx context.Context, rp name.Repository, subject v1.Hash) ([]byte, bool, error) {
	base := r.client.URL(rp, "referrers", subject.String())
	var all []v1.Descriptor
	next := ""
	for page := 0; page < maxReferrerPages; page++ {
		resp, err := r.client.Do(ctx, regclient.Request{Op: "GET referrers", Method: http.MethodGet, Repo: rp, Kind: "referrers",
			Ref: subject.String(), URL: next, Accept: string(types.OCIImageIndex),
			OK: []int{http.StatusOK, http.StatusNotFound, http.StatusBadRequest, http.StatusMethodNotAllowed}})
		if err != nil {
			return nil, false, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			if page > 0 {
				return nil, false, &regclient.RemoteError{Op: "GET referrers", URL: next, Status: resp.StatusCode}
			}
			return r.referrersFromTag(ctx, rp, subject)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, cache.MaxManifestBytes+1))
		resp.Body.Close()
		if err != nil {
			return nil, false, &regclient.RemoteError{Op: "GET referrers", URL: base, Err: err}
		}
		if len(b) > cache.MaxManifestBytes {
			return nil, false, fmt.Errorf("registry: the referrers of %s@%s: a page is larger than %d bytes", rp, subject, cache.MaxManifestBytes)
		}
		r.stats.bytes.Add(uint64(len(b)))
		var im v1.IndexManifest
		if err := json.Unmarshal(b, &im); err != nil {
			return nil, false, fmt.Errorf("registry: the referrers of %s@%s are not an index: %w", rp, subject, err)
		}
		all = append(all, im.Manifests...)
		link := nextLinkOf(resp.Header.Values("Link"))
		if link == "" {
			raw, err := json.Marshal(referrersIndex(all))
			return raw, false, err
		}
		u, err := url.Parse(base)
		if err != nil {
			return nil, false, err
		}
		ref, err := u.Parse(link)
		if err != nil || ref.Host != u.Host {
			return nil, false, fmt.Errorf("registry: the referrers of %s@%s: a Link to another host (%q)", rp, subject, link)
		}
		next = ref.String()
	}
	return nil, false, fmt.Errorf("registry: the referrers of %s@%s: more than %d pages", rp, subject, maxReferrerPages)
}

// referrersFromTag reads the referrers tag schema's tag: an index, or
// none (no referrers).
func (r *Resolver) referrersFromTag(ctx context.Context, rp name.Repository, subject v1.Hash) ([]byte, bool, error) {
	desc, raw, err := r.getManifest(ctx, rp, referrersTag(subject))
	var re *regclient.RemoteError
	switch {
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
		raw, err := json.Marshal(referrersIndex(nil))
		return raw, true, err
	case err != nil:
		return nil, true, err
	case !desc.MediaType.IsIndex():
		return nil, true, fmt.Errorf("registry: %s:%s is a %s, not the index of the referrers tag schema", rp, referrersTag(subject), desc.MediaType)
	}
	return raw, true, nil
}

// referrersIndex is an OCI index listing ds ("manifests": [], not null).
func referrersIndex(ds []v1.Descriptor) v1.IndexManifest {
	if ds == nil {
		ds = []v1.Descriptor{}
	}
	return v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: ds}
}

// parseReferrers reads a stored or fetched referrers index.
func parseReferrers(raw []byte) (*ReferrersList, error) {
	var im v1.IndexManifest
	if err := json.Unmarshal(raw, &im); err != nil {
		return nil, fmt.Errorf("not an index: %w", err)
	}
	return &ReferrersList{Index: referrersIndex(im.Manifests)}, nil
}

// nextLinkOf is the target of a rel="next" Link (RFC 8288), or "".
func nextLinkOf(links []string) string {
	for _, h := range links {
		for _, link := range strings.Split(h, ",") {
			if !hasNext([]string{link}) {
				continue
			}
			start, end := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
			if start >= 0 && end > start {
				return link[start+1 : end]
			}
		}
	}
	return ""
}
