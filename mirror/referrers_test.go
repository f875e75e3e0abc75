package mirror_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/internal/testimage"
)

// attachArtifact pushes an artifact of artifactType describing subject
// of repo and returns its digest.
func attachArtifact(t *testing.T, repo string, subject v1.Hash, artifactType string) v1.Hash {
	t.Helper()
	return testimage.ForTest(t).Attach(repo, subject, artifactType, []byte(artifactType), map[string]string{"org.example": "x"})
}

// getReferrers asks the mirror for subject's referrers (query: "" or
// "?artifactType=..."), and returns the status, the filters header and
// the listed digests.
func getReferrers(t *testing.T, mirrorHost, repoName string, subject v1.Hash, query string) (int, string, []v1.Descriptor) {
	t.Helper()
	resp, err := http.Get("http://" + mirrorHost + "/v2/" + repoName + "/referrers/" + subject.String() + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("referrers Content-Type %q", ct)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(body, &im); err != nil || im.SchemaVersion != 2 || im.Manifests == nil {
		t.Fatalf("referrers body %s: %v", body, err)
	}
	return resp.StatusCode, resp.Header.Get("OCI-Filters-Applied"), im.Manifests
}

// TestReferrersEndpoint serves referrers from an upstream with the
// referrers API and from one with the tag schema only: every referrer,
// filtered by artifactType (said with OCI-Filters-Applied), each then
// pulled by digest through the mirror; the same with the upstream down;
// an empty list for a subject nobody refers to; 400 for a bad digest.
func TestReferrersEndpoint(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrersAPI=%v", api), func(t *testing.T) {
			up := newUpstream(t, ggcrregistry.WithReferrersSupport(api))
			repo := up.host() + "/team/app"
			ti := testimage.ForTest(t)
			subject := ti.Push(repo+":v1", ti.RandomIndex(platforms, 256, 1))
			sig := attachArtifact(t, repo, subject, "application/vnd.dev.cosign.artifact.sig.v1+json")
			sbom := attachArtifact(t, repo, subject, "application/spdx+json")
			m := startLocalMirror(t, up.host())

			check := func(what string) {
				t.Helper()
				status, filters, all := getReferrers(t, m.host(), "team/app", subject, "")
				if status != http.StatusOK || len(all) != 2 || filters != "" {
					t.Fatalf("%s: %d, %v, filters %q; want both referrers, unfiltered", what, status, all, filters)
				}
				status, filters, some := getReferrers(t, m.host(), "team/app", subject, "?artifactType=application/spdx%2Bjson")
				if status != http.StatusOK || len(some) != 1 || some[0].Digest != sbom || filters != "artifactType" {
					t.Fatalf("%s, filtered: %d, %v, filters %q; want %s alone, filters artifactType", what, status, some, filters, sbom)
				}
				for _, d := range []v1.Hash{sig, sbom} {
					ref, _ := name.NewDigest(m.host() + "/team/app@" + d.String())
					if _, err := remote.Image(ref); err != nil {
						t.Errorf("%s: pulling referrer %s through the mirror: %v", what, d, err)
					}
				}
			}
			check("upstream up")
			up.down.Store(true)
			check("upstream down")
			up.down.Store(false)

			nobody := ti.Push(repo+":v2", ti.RandomIndex(platforms, 256, 1))
			if status, _, list := getReferrers(t, m.host(), "team/app", nobody, ""); status != http.StatusOK || len(list) != 0 {
				t.Errorf("a subject nobody refers to: %d, %v; want 200 and an empty list", status, list)
			}
			if status, _, _ := getReferrers(t, m.host(), "team/app", v1.Hash{Algorithm: "sha256", Hex: "zz"}, ""); status != http.StatusBadRequest {
				t.Errorf("a bad digest: %d, want 400", status)
			}
		})
	}
}

// TestSignatureTagsPassThrough: cosign's tag-schema signatures
// (sha256-<hex>.sig, .att, .sbom) are ordinary tags through the mirror,
// served from its store with the upstream down.
func TestSignatureTagsPassThrough(t *testing.T) {
	up := newUpstream(t)
	repo := up.host() + "/app"
	ti := testimage.ForTest(t)
	subject := ti.Push(repo+":v1", ti.RandomIndex(platforms, 256, 1))
	m := startLocalMirror(t, up.host())
	var want []v1.Hash
	for _, suffix := range []string{"sig", "att", "sbom"} {
		want = append(want, ti.PushArtifact(repo+":sha256-"+subject.Hex+"."+suffix, "application/vnd.example."+suffix, []byte(suffix), nil))
	}
	for _, down := range []bool{false, true} {
		up.down.Store(down)
		for i, suffix := range []string{"sig", "att", "sbom"} {
			ref, _ := name.NewTag(m.host() + "/app:sha256-" + subject.Hex + "." + suffix)
			img, err := remote.Image(ref)
			if err != nil {
				t.Fatalf("upstream down %v: %s: %v", down, ref, err)
			}
			if d, _ := img.Digest(); d != want[i] {
				t.Errorf("%s is %s, want %s", ref, d, want[i])
			}
		}
	}
}
