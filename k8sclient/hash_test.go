package k8sclient

import (
	"fmt"
	"hash/maphash"
	"strings"
	"testing"
)

// The key hash tells apart what a cache holds side by side: the same name
// in other namespaces, a List and an object, Lists of other generations,
// names of every length its code distinguishes (and one byte apart at
// either end); and it depends on the seed.
func TestKeyHash(t *testing.T) {
	const seed = 0x5eed
	seen := map[uint64]key{}
	add := func(k key) {
		t.Helper()
		h := k.hash(seed)
		if h != k.hash(seed) {
			t.Fatalf("%v: two hashes", k)
		}
		if other, ok := seen[h]; ok && other != k {
			t.Fatalf("%v and %v have the hash %#x", k, other, h)
		}
		seen[h] = k
	}
	for n := range 70 {
		name := strings.Repeat("x", n)
		for _, ns := range []string{"", "default", "kube-system", "team-a-production", "team-b-production"} {
			add(key{ns: ns, name: name})
			if n > 0 {
				add(key{ns: ns, name: "y" + name[1:]})
				add(key{ns: ns, name: name[:n-1] + "y"})
			}
		}
		add(key{ns: "default", name: name, list: true})
		add(key{ns: "default", name: name, list: true, gen: 1})
	}
	for i := range 20000 {
		add(key{ns: fmt.Sprintf("ns-%d", i%7), name: fmt.Sprintf("task-%05d", i)})
	}
	k := key{ns: "scheduler", name: "task-00500"}
	if k.hash(1) == k.hash(2) {
		t.Fatal("the hash does not depend on the seed")
	}
}

// Against hash/maphash, what it replaces: BenchmarkKeyHash/maphash is what
// a hit paid before.
func BenchmarkKeyHash(b *testing.B) {
	k := key{ns: "scheduler", name: "task-00500"}
	var sink uint64
	b.Run("wyhash", func(b *testing.B) {
		for b.Loop() {
			sink += k.hash(0x5eed)
		}
	})
	seed := maphash.MakeSeed()
	b.Run("maphash", func(b *testing.B) {
		for b.Loop() {
			sink += maphash.Comparable(seed, k)
		}
	})
}
