package mirror_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/internal/testimage"
)

// conformanceHint says how scripts/test builds the suite's binary.
const conformanceHint = "GOBIN=$(mktemp -d) go install github.com/opencontainers/distribution-spec/conformance@" +
	"v0.0.0-20260831232431-97274622c111 and move its conformance binary to $(go env GOPATH)/bin/oci-conformance, " +
	"or set BUILDCACHE_OCI_CONFORMANCE_BIN"

// TestConformancePull runs the OCI distribution-spec conformance suite's
// pull and content-discovery workflows against the mirror: push disabled
// (the mirror is read-only), and the read-only data (a tag, every
// manifest and blob of a two-platform image, and the image as a subject
// with two referrers) pre-seeded in the upstream, so the suite's requests
// go through the mirror's fetches as a client's would. It runs over an
// upstream with the referrers API and over one with only the referrers
// tag schema.
//
// Of content discovery, the suite's tag listing and referrers tests run:
// the referrers of a random subject (an empty list) and of the seeded
// subject (a valid index). Its artifactType filtering test, and the
// checks that each referrer is listed with its descriptor, run only on
// the data it pushes ("Artifacts with Subject", "Artifact without
// Layers", the generated image and index): a read-only mirror can take
// no push, so they do not apply. TestReferrersEndpoint checks filtering
// and the listing on seeded referrers instead.
func TestConformancePull(t *testing.T) {
	bin := requireTool(t, "BUILDCACHE_OCI_CONFORMANCE_BIN", "oci-conformance", conformanceHint)
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrersAPI=%v", api), func(t *testing.T) { runConformance(t, bin, api) })
	}
}

func runConformance(t *testing.T, bin string, referrersAPI bool) {
	up := newUpstream(t, ggcrregistry.WithReferrersSupport(referrersAPI))
	const repo = "conformance/repo1"
	ti := testimage.ForTest(t)
	subject := ti.Push(up.host()+"/"+repo+":v1", ti.RandomIndex(platforms, 32<<10, 2))
	for _, at := range []string{"application/vnd.dev.cosign.artifact.sig.v1+json", "application/spdx+json"} {
		attachArtifact(t, up.host()+"/"+repo, subject, at)
	}
	manifests, blobs := imageDigests(t, up.host()+"/"+repo+":v1")
	m := startLocalMirror(t, up.host())

	results := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = results // no oci-conformance.yaml there: the environment alone configures it
	cmd.Env = append(os.Environ(),
		"OCI_RESULTS_DIR="+results,
		"OCI_VERSION=1.1",
		"OCI_REGISTRY="+m.host(),
		"OCI_TLS=disabled",
		"OCI_REPO1="+repo,
		"OCI_REPO2=conformance/repo2",
		"OCI_API_PULL=true",
		"OCI_API_PUSH=false",
		"OCI_API_BLOBS_DELETE=false",
		"OCI_API_MANIFESTS_DELETE=false",
		"OCI_API_TAGS_DELETE=false",
		"OCI_API_TAGS_LIST=true",
		"OCI_API_REFERRER=true",
		"OCI_API_BLOBS_DIGEST_HEADER=true",
		// The suite checks a manifest's Docker-Content-Digest only on
		// the responses it keeps, and for read-only data it keeps none:
		// requiring the header fails every manifest test of any
		// registry. The mirror's own tests check it (TestTagOnlyFetchesTopManifest).
		"OCI_API_MANIFESTS_DIGEST_HEADER=false",
		"OCI_RO_DATA_TAGS=v1",
		"OCI_RO_DATA_MANIFESTS="+strings.Join(manifests, " "),
		"OCI_RO_DATA_BLOBS="+strings.Join(blobs, " "),
		"OCI_RO_DATA_REFERRERS="+subject.String(),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	// This revision of the suite panics writing results.yaml whenever push
	// is disabled (a skipped blob-push test leaves a status without its
	// data), after it printed its report: judge the report, and accept
	// that exit only with that panic.
	if err != nil && !(strings.Contains(stderr.String(), "ReportResultsYAML") && strings.Contains(stdout.String(), "OCI Conformance Result:")) {
		t.Fatalf("conformance suite: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	report := stdout.String()
	t.Logf("conformance suite report:\n%s", report)
	for _, want := range []string{
		"OCI Conformance Result: Pass",
		"Ping", "Blob get", "Blob head",
		"Manifest get by digest", "Manifest get by tag", "Manifest head by digest", "Manifest head by tag",
		"Read Only Inputs", "Invalid Manifest Digest", "Tag listing", "Referrers",
	} {
		if !reportSays(report, want) {
			t.Errorf("the conformance report does not say %q passed", want)
		}
	}
	if !regexp.MustCompile(`(?m)^\s*FAIL\.*:\s*0$`).MatchString(report) || !regexp.MustCompile(`(?m)^\s*Error\.*:\s*0$`).MatchString(report) {
		t.Error("the conformance report counts failures or errors")
	}
	served := m.clientCounts()
	if served["GET blobs"] < len(blobs) || served["GET manifests"] < len(manifests) {
		t.Errorf("the suite asked the mirror %v; want every one of %d manifests and %d blobs", served, len(manifests), len(blobs))
	}
}

// reportSays reports whether the suite's text report has the summary
// line what ("OCI Conformance Result: Pass") or a line "what....: Pass".
func reportSays(report, what string) bool {
	if strings.HasPrefix(what, "OCI Conformance Result") {
		return strings.Contains(report, what)
	}
	return regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(what) + `\.*:\s*Pass$`).MatchString(report)
}

// imageDigests lists the digests of an index's manifests (the index's
// first) and of every config and layer, as the registry serves them.
func imageDigests(t *testing.T, ref string) (manifests, blobs []string) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	top, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	manifests = append(manifests, top.String())
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[v1.Hash]bool{}
	for _, d := range im.Manifests {
		manifests = append(manifests, d.Digest.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		mf, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range append([]v1.Descriptor{mf.Config}, mf.Layers...) {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				blobs = append(blobs, b.Digest.String())
			}
		}
	}
	return manifests, blobs
}
