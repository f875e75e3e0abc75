package registry_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

// replicas are processes of a fleet: each a resolver over a tier of its
// own localfs near tier and one shared bucket (versitygw), all on one
// manual clock.
type replicas struct {
	t      *testing.T
	srv    *testserver.S3Server
	bucket string
	clock  *testclock.Clock
}

func newReplicas(t *testing.T) *replicas {
	srv := testserver.StartS3(t)
	return &replicas{t: t, srv: srv, bucket: srv.NewBucket(t), clock: testclock.New(time.Now())}
}

// replica is a fresh process: an empty near tier.
func (rs *replicas) replica(opts ...registry.Option) *registry.Resolver {
	t := rs.t
	far, err := s3.New(rs.srv.Client(), rs.bucket, "fleet/", s3.WithClock(rs.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	near, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store, err := tier.New(near, far)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return newResolver(t, store, append([]registry.Option{registry.WithClock(rs.clock.Now)}, opts...)...)
}

// countTag counts the registry's manifest requests for tag.
func countTag(reg *fakeRegistry, tag string) *atomic.Int32 {
	var n atomic.Int32
	reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/manifests/"+tag) {
			n.Add(1)
		}
		return false
	})
	return &n
}

// TestFleetFreshReplicaServesTheFleetsRecord: what one replica resolved,
// a fresh replica serves with no registry request within the max age,
// and stale, from the bucket, with the registry down.
func TestFleetFreshReplicaServesTheFleetsRecord(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/team/app:v1"
	top := push(t, ref, twoPlatformIndex(t, 4<<10))
	rs := newReplicas(t)
	ctx := t.Context()

	if res, err := rs.replica().Resolve(ctx, ref, both); err != nil || res.Digest != top {
		t.Fatalf("first replica: %v, %v", res, err)
	}
	reg.reset()
	res, err := rs.replica().Resolve(ctx, ref, both, cache.WithMaxAge(10*time.Minute))
	if err != nil || res.Digest != top || res.Source != cache.Hit {
		t.Fatalf("fresh replica within the max age: %+v, %v; want a hit of %s", res, err, top)
	}
	if n := reg.total(); n != 0 {
		t.Fatalf("fresh replica within the max age made %d registry requests", n)
	}

	reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	res, err = rs.replica(registry.WithStaleBudget(time.Second)).Resolve(ctx, ref, both)
	if err != nil || res.Digest != top || res.Source != cache.Stale {
		t.Fatalf("fresh replica, registry down: %+v, %v; want %s stale", res, err, top)
	}
}

// TestFleetOneRequestPerMaxAge: ten resolves spread over three replicas
// cost one request for the tag between them per max age: the pull when
// nobody has it, then one revalidation per max age.
func TestFleetOneRequestPerMaxAge(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/team/app:v1"
	push(t, ref, twoPlatformIndex(t, 4<<10))
	tagRequests := countTag(reg, "v1")
	rs := newReplicas(t)
	ctx := t.Context()
	fleet := []*registry.Resolver{rs.replica(), rs.replica(), rs.replica()}
	maxAge := cache.WithMaxAge(10 * time.Minute)
	for round := range 3 {
		tagRequests.Store(0)
		sources := map[cache.Source]int{}
		for i := range 10 {
			res, err := fleet[(i+round)%3].Resolve(ctx, ref, both, maxAge)
			if err != nil {
				t.Fatal(err)
			}
			sources[res.Source]++
		}
		if n := tagRequests.Load(); n != 1 {
			t.Fatalf("round %d: 10 resolves over 3 replicas made %d requests for the tag, want 1 (sources %v)", round, n, sources)
		}
		rs.clock.Advance(11 * time.Minute)
	}
}

// TestFleetConcurrentColdPullsOnce: three fresh replicas asked for one
// tag at once: one pulls it, the others wait for its record and serve
// it from the bucket.
func TestFleetConcurrentColdPullsOnce(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/team/app:v1"
	top := push(t, ref, twoPlatformIndex(t, 4<<10))
	tagRequests := countTag(reg, "v1")
	rs := newReplicas(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // hang guard
	defer cancel()
	var wg sync.WaitGroup
	for range 3 {
		r := rs.replica()
		for range 3 {
			wg.Go(func() {
				res, err := r.Resolve(ctx, ref, both, cache.WithMaxAge(10*time.Minute))
				if err != nil || res.Digest != top {
					t.Errorf("Resolve = %v, %v", res, err)
				}
			})
		}
	}
	wg.Wait()
	if n := tagRequests.Load(); n != 1 {
		t.Fatalf("9 concurrent cold resolves over 3 replicas made %d requests for the tag, want 1", n)
	}
}
