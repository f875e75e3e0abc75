package mirror_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
)

// /readyz answers 200 while the store takes writes and 503 once shutdown
// has begun; /healthz stays 200. A Server given WithHealth serves both
// ahead of authentication and calls Shutdown when its context ends.
func ExampleNewHealth() {
	dir, _ := os.MkdirTemp("", "health")
	defer os.RemoveAll(dir)
	store, _ := localfs.Open(dir)
	defer store.Close()
	health, _ := mirror.NewHealth(store)
	get := func(path string) {
		rec := httptest.NewRecorder()
		health.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Printf("%s %d %s", path, rec.Code, rec.Body)
	}
	get(mirror.ReadyzPath)
	health.Shutdown()
	get(mirror.ReadyzPath)
	get(mirror.HealthzPath)
	// Output:
	// /readyz 200 ok
	// /readyz 503 not ready: shutting down
	// /healthz 200 ok
}
