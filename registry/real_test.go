package registry_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/regclient"
)

// countingTransport counts requests by method, on the client side, so it
// works against any real server.
type countingTransport struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.counts[r.Method]++
	c.mu.Unlock()
	return remote.DefaultTransport.RoundTrip(r)
}

func (c *countingTransport) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.counts
	c.counts = map[string]int{}
	return m
}

// TestRealRegistry runs the resolver's lifecycle against a real registry
// server (Debian's docker-registry, distribution 2.8), stopping and
// restarting it to prove stale-if-error.
func TestRealRegistry(t *testing.T) {
	srv := testserver.StartRegistry(t)
	ctx := t.Context()
	ref := srv.Host + "/library/flink:1.14.5"
	shared, _ := random.Layer(256<<10, "application/vnd.oci.image.layer.v1.tar")
	d1 := push(t, ref, twoPlatformIndex(t, 128<<10, shared))

	ct := &countingTransport{counts: map[string]int{}}
	store := openStore(t)
	r := newResolver(t, store, withClient(t, regclient.WithTransport(ct)))

	res, err := r.Resolve(ctx, ref, both)
	if err != nil || res.Source != cache.Pulled || res.Digest != d1 {
		t.Fatalf("cold: %+v, %v", res, err)
	}
	if got := ct.take(); got["GET"] != 3+7 || got["HEAD"] != 0 {
		t.Errorf("cold pull made %v, want 10 GETs (3 manifests, 7 blobs) and no HEAD", got)
	}

	res, err = r.Resolve(ctx, ref, both)
	if err != nil || res.Source != cache.Revalidated {
		t.Fatalf("warm: %+v, %v", res, err)
	}
	if got := ct.take(); got["HEAD"] != 1 || len(got) != 1 {
		t.Errorf("warm revalidation made %v, want exactly one HEAD", got)
	}

	d2 := push(t, ref, twoPlatformIndex(t, 128<<10, shared))
	res, err = r.Resolve(ctx, ref, both)
	if err != nil || res.Source != cache.Pulled || res.Digest != d2 {
		t.Fatalf("after the tag moved: %+v, %v", res, err)
	}
	if got := ct.take(); got["HEAD"] != 1 || got["GET"] != 3+6 {
		t.Errorf("tag moved: %v, want 1 HEAD and 9 GETs (the shared layer is not fetched again)", got)
	}

	srv.Stop()
	res, err = r.Resolve(ctx, ref, both)
	if err != nil || res.Source != cache.Stale || res.Digest != d2 {
		t.Fatalf("registry stopped: %+v, %v; want Stale", res, err)
	}
	t.Logf("stale answer's remote error: %v", res.RemoteErr)
	srv.Start(t)
	res, err = r.Resolve(ctx, ref, both)
	if err != nil || res.Source != cache.Revalidated {
		t.Fatalf("registry back: %+v, %v; want Revalidated", res, err)
	}
	rep, err := store.Verify(ctx)
	if err != nil || len(rep.Bad) != 0 || len(rep.Missing) != 0 {
		t.Fatalf("Verify: %+v, %v", rep, err)
	}
}
