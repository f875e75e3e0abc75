package registry_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/memory"
)

// Regression tests for issue 11, item 1: every download a pull makes is
// bounded, by the size its descriptor states or by a cap, against a
// registry that streams forever or states sizes that are lies.

var amd64Only = cache.WithPlatforms("linux/amd64")

// boundedStore is a store a hostile pull runs into, and what it can say
// about leftovers.
type boundedStore struct {
	name  string
	open  func(t *testing.T) cache.LayerCache
	clean func(t *testing.T, s cache.LayerCache) // fails if a partial blob is left
}

var boundedStores = []boundedStore{
	{
		name: "memory",
		open: func(t *testing.T) cache.LayerCache {
			s, err := memory.NewLayerCache() // no byte budget: only the pull bounds it
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		clean: func(*testing.T, cache.LayerCache) {},
	},
	{
		name: "localfs",
		open: func(t *testing.T) cache.LayerCache { return openStore(t) },
		clean: func(t *testing.T, s cache.LayerCache) {
			t.Helper()
			tmp, err := os.ReadDir(filepath.Join(storeDir(t, s), ".buildcache", "tmp"))
			if err != nil {
				t.Fatal(err)
			}
			if len(tmp) > 0 {
				t.Errorf("temp files left behind: %v", tmp)
			}
		},
	},
}

// storeDir is a localfs store's directory.
func storeDir(t *testing.T, s cache.LayerCache) string {
	t.Helper()
	type rooted interface{ Dir() string }
	if r, ok := s.(rooted); ok {
		return r.Dir()
	}
	t.Fatalf("%T has no Dir", s)
	return ""
}

func assertNotStored(t *testing.T, s cache.LayerCache, d v1.Hash) {
	t.Helper()
	if size, err := s.Stat(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Stat(%s) = %d, %v; want ErrNotFound: nothing of it stored", d, size, err)
	}
}

// A single-platform image's config was fetched with no size at all: a
// registry streaming it forever filled the heap (memory) or the disk
// (localfs). It is now bounded by the size the manifest states, and the
// over-long body aborts the Put, names the digest and the bound, and is
// closed at once.
func TestPullBoundsTheConfigOfASinglePlatformImage(t *testing.T) {
	for _, st := range boundedStores {
		t.Run(st.name, func(t *testing.T) {
			h := testserver.StartHostile(t)
			cfg := h.Blob(testserver.ConfigJSON("linux", "amd64"))
			layer := h.Blob([]byte("layer"))
			h.Manifest("app", "1", types.OCIManifestSchema1, testserver.ManifestJSON(cfg, layer))
			h.Endless(cfg.Digest)
			store := st.open(t)

			_, err := newResolver(t, store).Resolve(t.Context(), h.Host+"/app:1", amd64Only)
			h.Close() // wait for the handler: it ends when the client hangs up
			want := fmt.Sprintf("%s: more than the expected %d bytes", cfg.Digest, cfg.Size)
			if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, cache.ErrDigestMismatch) {
				t.Fatalf("Resolve = %v; want an error with %q wrapping ErrDigestMismatch", err, want)
			}
			if n := h.Served(cfg.Digest); n >= testserver.EndlessCap {
				t.Errorf("the registry sent %d bytes of the config before the client hung up: unbounded", n)
			}
			if n := h.Requests(cfg.Digest); n != 1 {
				t.Errorf("the config was requested %d times, want 1 (an over-long body is not retried)", n)
			}
			assertNotStored(t, store, cfg.Digest)
			st.clean(t, store)
		})
	}
}

// A layer that streams on past its stated size is cut at size+1 bytes,
// and nothing of it stays.
func TestPullBoundsALayerByItsStatedSize(t *testing.T) {
	for _, st := range boundedStores {
		t.Run(st.name, func(t *testing.T) {
			h := testserver.StartHostile(t)
			cfg := h.Blob(testserver.ConfigJSON("linux", "amd64"))
			layer := h.Blob(bytes.Repeat([]byte("x"), 1000))
			h.Manifest("app", "1", types.OCIManifestSchema1, testserver.ManifestJSON(cfg, layer))
			h.Endless(layer.Digest)
			store := st.open(t)

			_, err := newResolver(t, store).Resolve(t.Context(), h.Host+"/app:1", amd64Only)
			h.Close()
			want := fmt.Sprintf("%s: more than the expected 1000 bytes", layer.Digest)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Resolve = %v; want an error with %q", err, want)
			}
			if n := h.Served(layer.Digest); n >= testserver.EndlessCap {
				t.Errorf("the registry sent %d bytes of the layer before the client hung up", n)
			}
			assertNotStored(t, store, layer.Digest)
			st.clean(t, store)
		})
	}
}

// A negative size turned the size check off; an absurd one was asked
// for. Both are now refused before any request, naming digest and size.
func TestPullRefusesBadBlobSizesBeforeAnyRequest(t *testing.T) {
	const tib = 1 << 40
	for _, tt := range []struct {
		name        string
		config      bool // falsify the config's size, else the layer's
		size        int64
		wantInError string
	}{
		{"negative layer", false, -1, "negative size, -1"},
		{"absurd layer", false, 2 * tib, "claims 2199023255552 bytes, more than the 1099511627776 a layer may have"},
		{"negative config", true, -5, "negative size, -5"},
		{"absurd config", true, 9 << 20, "claims 9437184 bytes, more than the 8388608 a config may have"},
	} {
		for _, nested := range []bool{false, true} {
			name := tt.name + " in a single-platform image"
			if nested {
				name = tt.name + " in an index"
			}
			t.Run(name, func(t *testing.T) {
				h := testserver.StartHostile(t)
				cfg := h.Blob(testserver.ConfigJSON("linux", "amd64"))
				layer := h.Blob([]byte("layer"))
				bad := &layer
				if tt.config {
					bad = &cfg
				}
				h.Endless(bad.Digest) // were it fetched, it would be unbounded
				bad.Size = tt.size
				raw := testserver.ManifestJSON(cfg, layer)
				if nested {
					m := h.Manifest("app", "", types.OCIManifestSchema1, raw)
					m.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
					h.Manifest("app", "1", types.OCIImageIndex, testserver.IndexJSON(m))
				} else {
					h.Manifest("app", "1", types.OCIManifestSchema1, raw)
				}
				store := openStore(t)

				_, err := newResolver(t, store).Resolve(t.Context(), h.Host+"/app:1", amd64Only)
				if err == nil || !strings.Contains(err.Error(), bad.Digest.String()) || !strings.Contains(err.Error(), tt.wantInError) {
					t.Fatalf("Resolve = %v; want an error naming %s and saying %q", err, bad.Digest, tt.wantInError)
				}
				if n := h.Requests(bad.Digest); n != 0 {
					t.Errorf("%s was requested %d times; want none", bad.Digest, n)
				}
				assertNotStored(t, store, bad.Digest)
			})
		}
	}
}

// A manifest an index lists is read no further than the size the index
// states, which must be between 1 byte and cache.MaxManifestBytes (4 MiB).
func TestPullBoundsChildManifestsByTheirListedSize(t *testing.T) {
	amd64 := &v1.Platform{OS: "linux", Architecture: "amd64"}
	for _, tt := range []struct {
		name        string
		size        func(true int64) int64
		endless     bool
		requested   bool
		wantInError string
	}{
		{"negative", func(int64) int64 { return -1 }, true, false, "negative size, -1"},
		{"zero", func(int64) int64 { return 0 }, true, false, "listed with size 0, not 1 to 4194304 bytes"},
		{"above the cap", func(int64) int64 { return 5 << 20 }, true, false, "listed with size 5242880, not 1 to 4194304 bytes"},
		{"too small", func(n int64) int64 { return n - 1 }, false, true, "is larger than"},
		{"endless", func(n int64) int64 { return n }, true, true, "is larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := testserver.StartHostile(t)
			cfg := h.Blob(testserver.ConfigJSON("linux", "amd64"))
			m := h.Manifest("app", "", types.OCIManifestSchema1, testserver.ManifestJSON(cfg))
			if tt.endless {
				h.Endless(m.Digest)
			}
			listed := m
			listed.Platform = amd64
			listed.Size = tt.size(m.Size)
			h.Manifest("app", "1", types.OCIImageIndex, testserver.IndexJSON(listed))

			_, err := newResolver(t, openStore(t)).Resolve(t.Context(), h.Host+"/app:1", amd64Only)
			h.Close()
			if err == nil || !strings.Contains(err.Error(), m.Digest.String()) || !strings.Contains(err.Error(), tt.wantInError) {
				t.Fatalf("Resolve = %v; want an error naming %s and saying %q", err, m.Digest, tt.wantInError)
			}
			if got := h.Requests(m.Digest) > 0; got != tt.requested {
				t.Errorf("manifest requested: %v, want %v", got, tt.requested)
			}
			if n := h.Served(m.Digest); n >= testserver.EndlessCap {
				t.Errorf("the registry sent %d bytes of the manifest", n)
			}
		})
	}
}

// Media types that are not an image's: a top-level "manifest" that says it
// is a layer is refused, and an index entry that is not a manifest is not
// fetched as one.
func TestPullRefusesWrongMediaTypes(t *testing.T) {
	t.Run("top level", func(t *testing.T) {
		h := testserver.StartHostile(t)
		cfg := h.Blob(testserver.ConfigJSON("linux", "amd64"))
		raw := bytes.Replace(testserver.ManifestJSON(cfg), []byte(types.OCIManifestSchema1), []byte(types.OCILayer), 1)
		h.Manifest("app", "1", types.OCIManifestSchema1, raw)
		_, err := newResolver(t, openStore(t)).Resolve(t.Context(), h.Host+"/app:1", amd64Only)
		if err == nil || !strings.Contains(err.Error(), "not an image manifest or index") {
			t.Fatalf("Resolve = %v; want it refused as not an image manifest", err)
		}
		if n := h.Requests(cfg.Digest); n != 0 {
			t.Errorf("the config was requested %d times; want none", n)
		}
	})
	t.Run("index entry", func(t *testing.T) {
		h := testserver.StartHostile(t)
		huge := h.Blob([]byte("a layer, not a manifest"))
		h.Endless(huge.Digest)
		huge.MediaType = types.OCILayer
		huge.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
		h.Manifest("app", "1", types.OCIImageIndex, testserver.IndexJSON(huge))
		_, err := newResolver(t, openStore(t)).Resolve(t.Context(), h.Host+"/app:1", amd64Only)
		if err == nil || !strings.Contains(err.Error(), "no manifest for platform linux/amd64") {
			t.Fatalf("Resolve = %v; want no manifest for linux/amd64", err)
		}
		if n := h.Requests(huge.Digest); n != 0 {
			t.Errorf("the layer listed as a manifest was requested %d times; want none", n)
		}
	})
	t.Run("nested index chosen for a platform", func(t *testing.T) {
		h := testserver.StartHostile(t)
		cfg := h.Blob(testserver.ConfigJSON("linux", "amd64"))
		m := h.Manifest("app", "", types.OCIManifestSchema1, testserver.ManifestJSON(cfg))
		h.Nest("app", "1", 8, &v1.Platform{OS: "linux", Architecture: "amd64"}, m)
		_, err := newResolver(t, openStore(t)).Resolve(t.Context(), h.Host+"/app:1", amd64Only)
		if err == nil || !strings.Contains(err.Error(), "listed as an image manifest, is not one") {
			t.Fatalf("Resolve = %v; want the nested index refused", err)
		}
	})
}

// Issue 11, item 8: "no manifest for platform" listed every platform of
// the index (159 KB for 10,000 entries); it lists 10 and counts the rest.
func TestNoManifestForPlatformListsTenPlatforms(t *testing.T) {
	h := testserver.StartHostile(t)
	cfg := h.Blob(testserver.ConfigJSON("linux", "riscv64"))
	m := h.Manifest("app", "", types.OCIManifestSchema1, testserver.ManifestJSON(cfg))
	entries := make([]v1.Descriptor, 10000)
	for i := range entries {
		entries[i] = m
		entries[i].Platform = &v1.Platform{OS: "linux", Architecture: "arch" + strconv.Itoa(i)}
	}
	h.Manifest("app", "1", types.OCIImageIndex, testserver.IndexJSON(entries...))
	_, err := newResolver(t, openStore(t)).Resolve(t.Context(), h.Host+"/app:1", amd64Only)
	if err == nil || !strings.Contains(err.Error(), "linux/arch9 … and 9990 more)") {
		msg := fmt.Sprint(err)
		t.Fatalf("Resolve = %.300s… (%d bytes); want the first 10 platforms and a count of the rest", msg, len(msg))
	}
	if len(err.Error()) > 1024 {
		t.Errorf("the error is %d bytes long", len(err.Error()))
	}
}
