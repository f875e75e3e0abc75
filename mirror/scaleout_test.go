package mirror_test

import (
	"testing"

	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// TestScaleOutSharedFarTier runs two mirrors, each with its own localfs
// near tier, over one S3 bucket (versitygw) as their shared far tier: what
// the first fetched, the second serves without fetching it again.
func TestScaleOutSharedFarTier(t *testing.T) {
	srv := testserver.StartS3(t)
	bucket := srv.NewBucket(t)
	up := newUpstream(t)
	ref := "/team/app:v1"
	ti := testimage.ForTest(t)
	top := ti.Push(up.host()+ref, ti.RandomIndex(platforms, 64<<10, 2))

	instance := func() *servedMirror {
		near, err := localfs.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		far, err := s3.New(srv.Client(), bucket, "mirror/")
		if err != nil {
			t.Fatal(err)
		}
		store, err := tier.New(near, far)
		if err != nil {
			t.Fatal(err)
		}
		return startMirror(t, up.host(), store)
	}
	a, b := instance(), instance()

	up.requests.Store(0)
	if d := pullAll(t, a.host()+ref); d != top {
		t.Fatalf("first instance pulled %s, want %s", d, top)
	}
	if up.requests.Load() == 0 {
		t.Fatal("the first instance's cold pull made no upstream request")
	}

	// By digest the second instance fetches nothing upstream: every
	// manifest and blob is in the shared far tier. It asks only whether
	// team/app holds the index (one HEAD: a name it has served nothing
	// under), and then knows the rest from the index it served.
	b.upstream.counts()
	if d := pullAll(t, b.host()+"/team/app@"+top.String()); d != top {
		t.Fatalf("second instance pulled %s, want %s", d, top)
	}
	if n := b.upstream.counts(); len(n) != 1 || n["HEAD manifests"] != 1 {
		t.Fatalf("the second instance's pull by digest asked upstream %v, want one HEAD of the index", n)
	}

	// By tag it finds the first instance's record of the tag in the
	// bucket and revalidates it (no max age): one HEAD of the tag, and
	// nothing else from upstream.
	b.upstream.counts()
	if d := pullAll(t, b.host()+ref); d != top {
		t.Fatalf("second instance pulled %s by tag, want %s", d, top)
	}
	if n := b.upstream.counts(); n["GET blobs"]+n["HEAD blobs"] != 0 || n["GET manifests"] != 0 || n["HEAD manifests"] != 1 {
		t.Fatalf("the second instance's pull by tag asked upstream %v, want only the tag's manifest", n)
	}
}
