package registry_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
)

// referrersRegistry is go-containerregistry's in-process registry, with
// or without the referrers API, that can be stopped (503).
type referrersRegistry struct {
	host string
	down atomic.Bool
}

func newReferrersRegistry(t *testing.T, api bool) *referrersRegistry {
	t.Helper()
	r := &referrersRegistry{}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(api))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// attach pushes an artifact of artifactType describing subject of repo.
func attach(t *testing.T, repo string, subject v1.Hash, artifactType string) v1.Hash {
	t.Helper()
	return testimage.ForTest(t).Attach(repo, subject, artifactType, []byte(artifactType+" of "+subject.String()), nil)
}

func referrerDigests(l *registry.ReferrersList) []v1.Hash {
	var out []v1.Hash
	for _, d := range l.Index.Manifests {
		out = append(out, d.Digest)
	}
	return out
}

// TestReferrers lists a subject's referrers from the registry's API and,
// without one, from the referrers tag schema; stores the list with the
// subject; serves it Stale with the registry down; and a subject nothing
// refers to has an empty list.
func TestReferrers(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(map[bool]string{true: "api", false: "tag schema"}[api], func(t *testing.T) {
			reg := newReferrersRegistry(t, api)
			store := openStore(t)
			r := newResolver(t, store, registry.WithStaleBudget(200*time.Millisecond))
			repo := reg.host + "/app"
			subject := push(t, repo+":v1", twoPlatformIndex(t, 256))
			sig := attach(t, repo, subject, "application/vnd.example.sig")
			sbom := attach(t, repo, subject, "application/spdx+json")

			l, err := r.Referrers(t.Context(), repo, subject, 0)
			if err != nil {
				t.Fatal(err)
			}
			got := referrerDigests(l)
			if len(got) != 2 || l.Source != cache.Pulled || l.FromTag == api {
				t.Fatalf("referrers %v (source %v, from tag %v), want %s and %s pulled", got, l.Source, l.FromTag, sig, sbom)
			}
			root, ok, err := store.Root(t.Context(), repo+":sha256-"+subject.Hex)
			if err != nil || !ok || root.Annotations[cache.AnnotationSubject] != subject.String() {
				t.Fatalf("the list's root: %+v, %v, %v; want one marked with its subject", root, ok, err)
			}

			reg.down.Store(true)
			l, err = r.Referrers(t.Context(), repo, subject, 0)
			if err != nil || l.Source != cache.Stale || len(l.Index.Manifests) != 2 {
				t.Fatalf("registry down: %+v, %v; want the stored list, stale", l, err)
			}
			reg.down.Store(false)
			none := push(t, repo+":v2", twoPlatformIndex(t, 256))
			l, err = r.Referrers(t.Context(), repo, none, 0)
			if err != nil || len(l.Index.Manifests) != 0 || l.Index.Manifests == nil {
				t.Fatalf("no referrers: %+v, %v; want an empty list", l, err)
			}
		})
	}
}

// TestWithReferrersKeepsThemWithTheImage: WithReferrers stores cosign's
// tags and the referrers of an image with it, so they are there with the
// registry down; GC keeps them while it keeps the image; Prune drops
// them once the image is gone.
func TestWithReferrersKeepsThemWithTheImage(t *testing.T) {
	reg := newReferrersRegistry(t, false)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	store := openStore(t)
	r := newResolver(t, store, registry.WithReferrers(), registry.WithClock(func() time.Time { return now }))
	repo := reg.host + "/app"
	subject := push(t, repo+":v1", twoPlatformIndex(t, 256))
	ti := testimage.ForTest(t)
	sigTag := ti.PushArtifact(repo+":sha256-"+subject.Hex+".sig", "application/vnd.dev.cosign.simplesigning.v1+json", []byte("sig"), nil)
	attTag := ti.PushArtifact(repo+":sha256-"+subject.Hex+".att", "application/vnd.dsse.envelope.v1+json", []byte("att"), nil)
	sbom := attach(t, repo, subject, "application/spdx+json")
	if _, err := r.Resolve(t.Context(), repo+":v1", both); err != nil {
		t.Fatal(err)
	}
	kept := []v1.Hash{sigTag, attTag, sbom}
	if _, err := store.GC(t.Context(), localfs.GCMaxBytes(1)); err != nil {
		t.Fatal(err)
	}
	for _, d := range kept {
		if _, err := store.Stat(t.Context(), d); err != nil {
			t.Errorf("%s, which describes the kept image, is not stored after GC: %v", d, err)
		}
	}

	// The image is not resolved for two days: Prune drops it (and not its
	// signatures, for their own age), GC collects it and them, and the
	// next Prune drops their records.
	now = now.Add(48 * time.Hour)
	dropped, err := r.Prune(t.Context(), 24*time.Hour)
	if err != nil || len(dropped) != 1 {
		t.Fatalf("Prune dropped %v, %v; want only app:v1", dropped, err)
	}
	if _, err := store.GC(t.Context(), localfs.GCMaxBytes(1)); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(kept, subject) {
		if _, err := store.Stat(t.Context(), d); err == nil {
			t.Errorf("%s is still stored once its image was pruned", d)
		}
	}
	dropped, err = r.Prune(t.Context(), 24*time.Hour)
	if err != nil || len(dropped) != 3 {
		t.Fatalf("the second Prune dropped %v, %v; want the image's .sig, .att and referrers list", dropped, err)
	}
	im, err := store.Index(t.Context())
	if err != nil || len(im.Manifests) != 0 {
		t.Fatalf("roots left: %v, %v", im, err)
	}
}
