package localfs

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
)

// digestKey is a sha256 digest in binary: half the bytes of its hex, and
// no string header or pointer for the garbage collector to follow.
type digestKey [32]byte

func (k digestKey) hash() v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(k[:])} }

// keyOf parses a blob's file name, which must be 64 lowercase hex digits.
func keyOf(name string) (digestKey, bool) {
	var k digestKey
	if len(name) != 64 {
		return k, false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return k, false
		}
	}
	_, err := hex.Decode(k[:], []byte(name))
	return k, err == nil
}

// blobRec is what a collector keeps of a blob: 48 bytes.
type blobRec struct {
	key     digestKey
	size    int64
	lastUse int64 // mtime, unix ns: the LRU clock
}

// scanBatch is how many directory entries a scan reads at a time, so a
// directory of 100,000 blobs is never held as entries all at once.
const scanBatch = 1024

// eachBlob calls fn for every regular file in blobs/sha256 named like a
// blob, reading the directory in batches.
func (s *Store) eachBlob(ctx context.Context, fn func(name string, info fs.FileInfo) error) error {
	dir, err := os.Open(s.blobDir)
	if err != nil {
		return fmt.Errorf("localfs: scanning %s: %w", s.blobDir, err)
	}
	defer dir.Close()
	for {
		entries, err := dir.ReadDir(scanBatch)
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !e.Type().IsRegular() {
				continue
			}
			if _, ok := keyOf(e.Name()); !ok {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since it was listed
			}
			if err != nil {
				return fmt.Errorf("localfs: scanning %s: %w", s.blobDir, err)
			}
			if err := fn(e.Name(), info); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && len(entries) == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("localfs: scanning %s: %w", s.blobDir, err)
		}
	}
}

// scan lists every blob with its size and last use, and their total.
func (s *Store) scan(ctx context.Context) ([]blobRec, int64, error) {
	var blobs []blobRec
	var total int64
	err := s.eachBlob(ctx, func(name string, info fs.FileInfo) error {
		k, _ := keyOf(name)
		blobs = append(blobs, blobRec{key: k, size: info.Size(), lastUse: info.ModTime().UnixNano()})
		total += info.Size()
		return nil
	})
	return blobs, total, err
}

// reachCache keeps the last reachability computed, for the generation of
// the roots (index.json and the root journal, revalidated by the roots
// view) it was computed from. It also depends on which manifests were present:
// an absent one ended its branch, so it is valid only while every such
// manifest (frontier) is still absent.
type reachCache struct {
	mu       sync.Mutex
	gen      uint64 // of the roots; 0: nothing cached
	keep     map[digestKey]reach
	frontier map[digestKey]bool
}

// reachableIn returns what index.json's roots reach, from the cache if
// neither the roots nor the presence of a frontier manifest changed
// since; blobs is a scan taken under gc.lock. The map is shared: do not
// change it.
func (s *Store) reachableIn(ctx context.Context, blobs []blobRec) (map[digestKey]reach, error) {
	c := &s.reach
	c.mu.Lock()
	defer c.mu.Unlock()
	// The generation is taken before the roots are read, so a change in
	// between shows as a new generation next time.
	gen, err := s.rootsGeneration(ctx)
	if err != nil {
		return nil, err
	}
	if c.keep != nil && c.gen == gen && !anyPresent(blobs, c.frontier) {
		return c.keep, nil
	}
	keep, frontier, err := s.reachable(ctx)
	if err != nil {
		c.keep, c.frontier, c.gen = nil, nil, 0
		return nil, err
	}
	c.keep, c.frontier, c.gen = keep, frontier, gen
	return keep, nil
}

func anyPresent(blobs []blobRec, set map[digestKey]bool) bool {
	if len(set) == 0 {
		return false
	}
	for _, b := range blobs {
		if set[b.key] {
			return true
		}
	}
	return false
}

// readManifestRefs reads the descriptors a manifest or index blob
// references. absent reports that the blob could not be read (missing,
// corrupt, unreadable), which may change; a blob that reads but does not
// parse never will.
func (s *Store) readManifestRefs(d v1.Hash) (m manifestRefs, absent bool) {
	b, err := s.readSmallBlob(d, cache.MaxManifestBytes)
	if err != nil {
		var tooLarge *tooLargeError
		return m, !errors.As(err, &tooLarge)
	}
	if json.Unmarshal(b, &m) != nil {
		return manifestRefs{}, false
	}
	return m, false
}

type manifestRefs struct {
	Manifests []v1.Descriptor `json:"manifests"`
	Config    *v1.Descriptor  `json:"config"`
	Layers    []v1.Descriptor `json:"layers"`
	Blobs     []v1.Descriptor `json:"blobs"`
	Subject   *v1.Descriptor  `json:"subject"`
}

type tooLargeError struct {
	d    v1.Hash
	size int64
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("%s: %d bytes is too large for a manifest", e.d, e.size)
}

// readSmallBlob reads and verifies a blob of at most limit bytes.
func (s *Store) readSmallBlob(d v1.Hash, limit int64) ([]byte, error) {
	f, info, err := openRegular(s.blobPath(d))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.Size() > limit {
		return nil, &tooLargeError{d, info.Size()}
	}
	return io.ReadAll(verify.NewReader(f, d, info.Size(), cache.ErrCorrupt))
}

// leasedKeys is leasedBlobs keyed as scans are.
func (s *Store) leasedKeys() map[digestKey]bool {
	out := map[digestKey]bool{}
	for hex := range s.leasedBlobs() {
		if k, ok := keyOf(hex); ok {
			out[k] = true
		}
	}
	return out
}

// validKey converts a descriptor's digest, if it is one a blob can have.
func validKey(d v1.Hash) (digestKey, bool) {
	if cache.ValidateDigest(d) != nil {
		return digestKey{}, false
	}
	return keyOf(d.Hex)
}
