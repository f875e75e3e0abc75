package mirror

import (
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// maxKnownSizes bounds the blob sizes a Mirror remembers: far more than
// the layers a node pulls at once, a few MiB of memory.
const maxKnownSizes = 1 << 16

// blobSizes remembers the size of every blob listed by an image manifest
// the mirror served, per repository: a client pulls the manifest first,
// so the download of a blob it then asks for is bounded by the size the
// manifest gives, even when the upstream's answer states none, and a
// response can announce it. The oldest entries go first.
type blobSizes struct {
	mu    sync.Mutex
	sizes map[string]int64 // "repo@digest" -> size
	order []string         // a ring of the keys, oldest at next
	next  int
}

// add remembers that a manifest served under repo gives blob d size
// bytes.
func (b *blobSizes) add(repo string, d v1.Hash, size int64) {
	if size < 0 {
		return
	}
	key := repo + "@" + d.String()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sizes == nil {
		b.sizes = map[string]int64{}
		b.order = make([]string, 0, 1024)
	}
	if _, ok := b.sizes[key]; ok {
		b.sizes[key] = size // the latest manifest's word
		return
	}
	if len(b.order) < maxKnownSizes {
		b.order = append(b.order, key)
	} else {
		delete(b.sizes, b.order[b.next])
		b.order[b.next] = key
		b.next = (b.next + 1) % maxKnownSizes
	}
	b.sizes[key] = size
}

// size returns the size of d in repo, or -1 if no manifest served there
// listed it.
func (b *blobSizes) size(repo string, d v1.Hash) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n, ok := b.sizes[repo+"@"+d.String()]; ok {
		return n
	}
	return -1
}
