package main

import (
	"bytes"
	"context"
	"maps"
	"testing"
	"time"

	"github.com/buildcache/buildcache/internal/testserver"
)

// TestMultiarch runs the example against a buildkitd of its own and checks
// the claims its table makes: BuildKit pulls the base from the registry
// only in the first row, serves it from our store in the others, and the
// last row takes its steps from the cache imported from the store.
func TestMultiarch(t *testing.T) {
	testserver.RequireArm64Emulation(t)
	d := testserver.StartBuildkitd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const filler = 4 << 20
	var out bytes.Buffer
	rows, err := run(ctx, &out, d.Addr, filler)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	if rows[0].registryBytes < filler || rows[0].storeBytes != 0 {
		t.Errorf("row %q: %d bytes from the registry, %d from the store; want the base (>= %d) from the registry",
			rows[0].name, rows[0].registryBytes, rows[0].storeBytes, filler)
	}
	for _, r := range rows[1:] {
		if r.registryBytes != 0 || r.registryGets != 0 {
			t.Errorf("row %q: %d GETs, %d bytes from the registry; want none", r.name, r.registryGets, r.registryBytes)
		}
	}
	if rows[1].storeBytes < filler {
		t.Errorf("row %q: BuildKit read %d bytes from the store, want the base (>= %d)", rows[1].name, rows[1].storeBytes, filler)
	}
	last := rows[3].res
	if len(last.CachedSteps()) < 4 {
		t.Errorf("row %q: cached steps %v, want the COPY and RUN of both platforms", rows[3].name, last.CachedSteps())
	}
	if len(last.Manifests) != 2 {
		t.Errorf("built platforms %v, want 2", last.Manifests)
	}
	for _, r := range rows {
		if !maps.Equal(r.res.Manifests, last.Manifests) {
			t.Errorf("row %q built %v, the last row %v: the builds should be reproducible", r.name, r.res.Manifests, last.Manifests)
		}
	}
}
