package mirror

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/rootindex"
	"github.com/buildcache/buildcache/memory"
)

// rootsStore is an in-memory store keeping roots.
type rootsStore struct {
	*memory.LayerCache
	*rootindex.Memory
}

// BenchmarkTagViewBuild is the cost of reading 10,000 roots into a tag
// view (what one outage minute costs), and of a lookup in it (what each
// tag list with the upstream down costs).
func BenchmarkTagViewBuild(b *testing.B) {
	ctx := context.Background()
	lc, err := memory.NewLayerCache()
	if err != nil {
		b.Fatal(err)
	}
	store := rootsStore{lc, &rootindex.Memory{}}
	for i := range 10000 {
		d := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", i)}
		ref := fmt.Sprintf("registry.example/team/app%d:v%d", i%500, i)
		if err := store.RecordRoot(ctx, v1.Descriptor{Digest: d, Annotations: map[string]string{cache.AnnotationRefName: ref}}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			v := tagView{now: time.Now}
			if err := v.build(ctx, store); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lookup", func(b *testing.B) {
		v := tagView{now: time.Now}
		if err := v.build(ctx, store); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if tags, _, err := v.of(ctx, store, "registry.example/team/app7"); err != nil || len(tags) != 20 {
				b.Fatalf("%d tags, %v", len(tags), err)
			}
		}
	})
}
