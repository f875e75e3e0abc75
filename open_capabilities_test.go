package buildcache_test

import (
	"net/url"
	"testing"

	"github.com/buildcache/buildcache"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/captest"
)

// What Open returns keeps the capabilities of what it opened: the same
// suites localfs and tier run, on a file:// store and on a tier:// whose
// near tier is one, each closed when the test ends.
func TestOpenKeepsCapabilities(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  func(dir string) string
	}{
		{"file", func(dir string) string { return "file://" + dir }},
		{"tier", func(dir string) string {
			return "tier://?near=" + url.QueryEscape("file://"+dir) + "&far=" + url.QueryEscape("mem://") + "&async_far=8MiB"
		}},
	} {
		open := func(t *testing.T) cache.LayerCache {
			c, err := buildcache.Open(t.Context(), tc.url(t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := c.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			return c
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Run("RootIndex", func(t *testing.T) { cachetest.RunRootIndex(t, open) })
			t.Run("DeferredSync", func(t *testing.T) { cachetest.RunDeferredSync(t, open) })
			t.Run("Ingester", func(t *testing.T) { cachetest.RunIngester(t, open) })
			t.Run("WriteProber", func(t *testing.T) { cachetest.RunWriteProber(t, open) })
			t.Run("Leaser", func(t *testing.T) {
				cachetest.RunLeaser(t, func(t *testing.T) cachetest.LeaseHarness { return captest.LocalLeases(t, open(t)) })
			})
			t.Run("FileOpener", func(t *testing.T) { cachetest.RunFileOpener(t, open, captest.CorruptLocal) })
		})
	}
}
