package buildkit

import (
	"context"
	"strings"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/tier"
)

// The backend has the methods PinBaseImages looks for: a renamed method
// would otherwise make every NamedContexts pin fail.
var _ LayoutStore = (*localfs.Store)(nil)

// unwrapper wraps a cache and says so (cache.Unwrapper), as an
// instrumenting or read-only wrapper would.
type unwrapper struct{ cache.LayerCache }

func (u unwrapper) Unwrap() cache.LayerCache { return u.LayerCache }

// TestPinBaseImagesFindsTheLayout: the store may be a tier with a localfs
// near tier, or a wrapper over one: PinBaseImages finds the directory with
// cache.As and serves the build from it. A store with no directory
// behind it is an error naming its type.
func TestPinBaseImagesFindsTheLayout(t *testing.T) {
	local := newStore(t)
	mem, err := memory.NewLayerCache()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tier.New(local, mem)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeResolver{store: local}
	for name, store := range map[string]cache.LayerCache{"tier": tr, "wrapper": unwrapper{local}, "wrapped tier": unwrapper{tr}} {
		t.Run(name, func(t *testing.T) {
			p, err := PinBaseImages(context.Background(), []byte("FROM alpine\n"), f, store, WithBuildPlatform(amd64))
			if err != nil {
				t.Fatal(err)
			}
			if p.OCIStores[DefaultStoreID] == nil || !strings.HasPrefix(p.FrontendAttrs["context:alpine::linux/amd64"], "oci-layout://buildcache@sha256:") {
				t.Errorf("pinned %+v, want a named context served from the near directory", p)
			}
		})
	}

	for name, store := range map[string]cache.LayerCache{
		"memory":                   mem,
		"wrapper without a layout": unwrapper{mem},
		"nil *localfs.Store":       (*localfs.Store)(nil),
	} {
		_, err := PinBaseImages(context.Background(), []byte("FROM alpine\n"), f, store, WithBuildPlatform(amd64))
		if err == nil || !strings.Contains(err.Error(), "OCI layout directory") {
			t.Errorf("%s: %v, want the NamedContexts store error", name, err)
		}
	}
}
