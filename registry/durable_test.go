package registry_test

import (
	"reflect"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/tier"
)

// TestResolverCountersPersistInTheStore: a resolver over a localfs store,
// or over a tier whose near tier is one, adds its counts to the store's
// lifetime counters, which a later process (a new Store) reads back.
func TestResolverCountersPersistInTheStore(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.host + "/app:1"
	push(t, ref, twoPlatformIndex(t, 256))

	for _, tc := range []struct {
		name string
		wrap func(t *testing.T, s *localfs.Store) cache.LayerCache
	}{
		{"localfs", func(_ *testing.T, s *localfs.Store) cache.LayerCache { return s }},
		{"tier with localfs near", func(t *testing.T, s *localfs.Store) cache.LayerCache {
			far, err := memory.NewLayerCache()
			if err != nil {
				t.Fatal(err)
			}
			c, err := tier.New(s, far)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			store, err := localfs.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			r := newResolver(t, tc.wrap(t, store))
			for _, policy := range []cache.PullPolicy{cache.PullAlways, cache.PullAlways, cache.PullIfNotPresent} {
				if _, err := r.Resolve(t.Context(), ref, both, cache.WithPolicy(policy)); err != nil {
					t.Fatal(err)
				}
			}
			want := r.Stats()
			if err := store.Close(); err != nil {
				t.Fatal(err)
			}

			next, err := localfs.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer next.Close()
			l, err := next.Lifetime(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			got := registry.ResolverStatsFromCounters(l.Counters)
			if got.Pulled != 1 || got.Revalidated != 1 || got.Hits != 1 || got.Resolves != 3 {
				t.Errorf("persisted %+v: want 1 pull, 1 revalidation, 1 hit in 3 resolves", got)
			}
			want.RateLimits, want.RevalidationsUnrecorded = nil, 0
			if !reflect.DeepEqual(got, want) {
				t.Errorf("persisted %+v, want the resolver's %+v", got, want)
			}
		})
	}
}
