package localfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
)

// reach says how a blob is reachable from index.json.
type reach struct {
	required bool // it must be present: a root, or what a manifest references
	named    bool // a root with a reference name (a recorded image) reaches it
}

// reachable returns the blobs that index.json's roots reach: the roots and,
// recursively, the manifests, configs and layers that index and manifest
// blobs reference. Missing or unreadable manifests end their branch.
// Roots and what a manifest references are required, while an index's
// children may be absent (a resolver fetches only the platforms it was
// asked for). Named roots are walked first, so that a blob first met from
// them is all that is named.
func (s *Store) reachable(ctx context.Context) (map[string]reach, error) {
	im, err := s.Index(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]reach{}
	named := false // the root being walked has a reference name
	var visit func(desc v1.Descriptor, required bool) error
	visit = func(desc v1.Descriptor, required bool) error {
		if cache.ValidateDigest(desc.Digest) != nil {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if r, ok := seen[desc.Digest.Hex]; ok {
			r.required = r.required || required
			seen[desc.Digest.Hex] = r
			return nil
		}
		seen[desc.Digest.Hex] = reach{required: required, named: named}
		if !isManifest(desc.MediaType) {
			return nil
		}
		var m struct {
			Manifests []v1.Descriptor `json:"manifests"`
			Config    *v1.Descriptor  `json:"config"`
			Layers    []v1.Descriptor `json:"layers"`
			Blobs     []v1.Descriptor `json:"blobs"`
			Subject   *v1.Descriptor  `json:"subject"`
		}
		b, err := s.readSmallBlob(desc.Digest, maxManifestSize)
		if err != nil || json.Unmarshal(b, &m) != nil {
			return nil
		}
		for _, c := range m.Manifests {
			if err := visit(c, false); err != nil {
				return err
			}
		}
		mustHave := append(append([]v1.Descriptor{}, m.Layers...), m.Blobs...)
		if m.Config != nil {
			mustHave = append(mustHave, *m.Config)
		}
		for _, c := range mustHave {
			if err := visit(c, true); err != nil {
				return err
			}
		}
		if m.Subject != nil { // the image an artifact describes may live elsewhere
			if err := visit(*m.Subject, false); err != nil {
				return err
			}
		}
		return nil
	}
	for _, pass := range []bool{true, false} {
		named = pass
		for _, desc := range im.Manifests {
			if (desc.Annotations[ociRefName] != "") != pass {
				continue
			}
			if err := visit(desc, true); err != nil {
				return nil, err
			}
		}
	}
	return seen, nil
}

// ociRefName is the OCI annotation that names a root; a resolver records
// the images it pulled under it (cache.AnnotationRefName).
const ociRefName = cache.AnnotationRefName

// maxManifestSize bounds what reachability parses; registries refuse
// manifests over 4 MiB too.
const maxManifestSize = 4 << 20

func isManifest(mt types.MediaType) bool {
	switch mt {
	case types.OCIImageIndex, types.OCIManifestSchema1, types.DockerManifestList, types.DockerManifestSchema2,
		"application/vnd.oci.artifact.manifest.v1+json":
		return true
	}
	return false
}

// readSmallBlob reads and verifies a blob of at most limit bytes.
func (s *Store) readSmallBlob(d v1.Hash, limit int64) ([]byte, error) {
	f, info, err := openRegular(s.blobPath(d))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes is too large for a manifest", d, info.Size())
	}
	return io.ReadAll(verify.NewReader(f, d, info.Size(), cache.ErrCorrupt))
}

type blobInfo struct {
	hex     string
	size    int64
	lastUse time.Time
}

// scan lists every blob with its size and last use.
func (s *Store) scan(ctx context.Context) ([]blobInfo, int64, error) {
	var blobs []blobInfo
	var total int64
	entries, err := os.ReadDir(s.blobDir)
	if err != nil {
		return nil, 0, fmt.Errorf("localfs: scanning %s: %w", s.blobDir, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		if !e.Type().IsRegular() || cache.ValidateDigest(v1.Hash{Algorithm: "sha256", Hex: e.Name()}) != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since ReadDir
		}
		blobs = append(blobs, blobInfo{hex: e.Name(), size: info.Size(), lastUse: info.ModTime()})
		total += info.Size()
	}
	return blobs, total, nil
}

func (s *Store) countUsed() (int64, error) {
	_, total, err := s.scan(context.Background())
	if err == nil {
		s.used.Store(total)
	}
	return total, err
}

// evict makes room for need more bytes within the byte budget and frees at
// least freeAtLeast bytes of disk, removing the least recently used blobs
// that no root reaches. It holds the exclusive GC lock, so no other process
// commits or collects meanwhile. It returns the bytes freed.
func (s *Store) evict(ctx context.Context, need, freeAtLeast int64) (int64, error) {
	l, err := lockFile(ctx, s.gcLock, true)
	if err != nil {
		return 0, err
	}
	defer l.Unlock()
	blobs, used, err := s.scan(ctx)
	if err != nil {
		return 0, err
	}
	keep, err := s.reachable(ctx)
	if err != nil {
		return 0, err
	}
	leased := s.leasedBlobs()
	enough := func(freed int64) bool {
		withinBudget := s.opts.maxBytes == 0 || used-freed+need <= s.opts.maxBytes
		return withinBudget && freed >= freeAtLeast
	}
	var evictable int64
	for _, b := range blobs {
		if _, reached := keep[b.hex]; !reached && !leased[b.hex] {
			evictable += b.size
		}
	}
	if !enough(evictable) {
		// Evicting cannot make room: keep every entry and refuse the write.
		s.used.Store(used)
		budget := "no byte budget"
		if s.opts.maxBytes > 0 {
			budget = fmt.Sprintf("budget %d bytes", s.opts.maxBytes)
		}
		return 0, fmt.Errorf("%d bytes needed (%s, %d to free on disk); blobs use %d bytes, of which only %d may be evicted (the rest is reachable from index.json or leased by pulls in progress): %w",
			need, budget, freeAtLeast, used, evictable, cache.ErrNoSpace)
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].lastUse.Before(blobs[j].lastUse) })
	var freed int64
	for _, b := range blobs {
		if enough(freed) {
			break
		}
		if _, reached := keep[b.hex]; reached || leased[b.hex] {
			continue
		}
		if err := os.Remove(filepath.Join(s.blobDir, b.hex)); err != nil {
			continue
		}
		freed += b.size
		s.stats.Evictions.Add(1)
	}
	s.used.Store(used - freed)
	if !enough(freed) {
		return freed, fmt.Errorf("%d bytes needed, budget %d, %d in use: blobs could not be removed: %w",
			need, s.opts.maxBytes, used-freed, cache.ErrNoSpace)
	}
	return freed, nil
}

// GCOption configures one GC run. An option given a value it cannot
// take makes GC fail before it changes anything.
type GCOption func(*gcOptions) error

type gcOptions struct {
	maxBytes int64
	ttl      time.Duration
}

// GCMaxBytes collects until the blobs fit in n bytes; 0 means no budget
// for this run. Default: the store's WithMaxBytes. A negative n is an
// error.
func GCMaxBytes(n int64) GCOption {
	return func(o *gcOptions) error {
		if err := nonNegative("GCMaxBytes", n); err != nil {
			return err
		}
		o.maxBytes = n
		return nil
	}
}

// GCTTL collects blobs unused for longer than d; 0 means no expiry for
// this run. Default: the store's WithTTL. A negative d is an error.
func GCTTL(d time.Duration) GCOption {
	return func(o *gcOptions) error {
		if err := nonNegative("GCTTL", d); err != nil {
			return err
		}
		o.ttl = d
		return nil
	}
}

// GCReport says what a GC run did.
type GCReport struct {
	Removed      int   // blobs removed
	FreedBytes   int64 // their bytes
	Kept         int   // blobs kept
	KeptBytes    int64
	Roots        int // blobs reachable from index.json, never collected
	Named        int // of Roots, those reachable from a root with a reference name (a recorded image)
	Leased       int // blobs kept because a pull in progress holds a lease on them (cache.Leaser)
	TempsRemoved int // abandoned temp files swept
}

// GC removes abandoned temp files, blobs that no root reaches and that
// were unused for longer than the TTL, and then the least recently used
// unreachable blobs until the rest fit the byte budget. Blobs reachable
// from index.json are kept, and so are blobs named by a live lease. It holds the exclusive GC lock: writers in
// other processes wait to commit, readers are not disturbed (an open blob
// stays readable after it is removed).
func (s *Store) GC(ctx context.Context, opts ...GCOption) (GCReport, error) {
	o := gcOptions{maxBytes: s.opts.maxBytes, ttl: s.opts.ttl}
	var rep GCReport
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return rep, err
		}
	}
	rep.TempsRemoved = s.sweepTemps()
	l, err := lockFile(ctx, s.gcLock, true)
	if err != nil {
		return rep, err
	}
	defer l.Unlock()
	blobs, used, err := s.scan(ctx)
	if err != nil {
		return rep, err
	}
	keep, err := s.reachable(ctx)
	if err != nil {
		return rep, err
	}
	leased := s.leasedBlobs()
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].lastUse.Before(blobs[j].lastUse) })
	cutoff := s.opts.now().Add(-o.ttl)
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if r, reached := keep[b.hex]; reached {
			rep.Roots++
			if r.named {
				rep.Named++
			}
			rep.Kept++
			rep.KeptBytes += b.size
			continue
		}
		if leased[b.hex] {
			rep.Leased++
			rep.Kept++
			rep.KeptBytes += b.size
			continue
		}
		expired := o.ttl > 0 && b.lastUse.Before(cutoff)
		overBudget := o.maxBytes > 0 && used > o.maxBytes
		if expired || overBudget {
			err := os.Remove(filepath.Join(s.blobDir, b.hex))
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				used -= b.size
				rep.Removed++
				rep.FreedBytes += b.size
				s.stats.Evictions.Add(1)
				continue
			}
		}
		rep.Kept++
		rep.KeptBytes += b.size
	}
	s.used.Store(used)
	return rep, nil
}
