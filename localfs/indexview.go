package localfs

import (
	"context"
	"errors"
	"hash/maphash"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
)

// The store keeps the roots parsed in memory (a view: index.json with the
// root journal applied, see journal.go) and checks on each call, with one
// lstat of index.json and one of the journal, that neither changed since
// it read them. Only a change, by this process or another (a resolver,
// BuildKit's client/ociindex, skopeo), costs a read, and of the journal
// only its new tail.
//
// A file's identity (device, inode, size, mtime, ctime) changes with
// every write, except for a write within the same tick of the file
// system's clock, of the same size, to the same inode: BuildKit rewrites
// index.json in place. As git does for its index, a read is trusted only
// once the file's mtime is older than the read by more than a tick
// (settleMargin): until then, each call reads the file again and
// compares a hash of its bytes, and parses only if they differ. The
// journal needs no such care: only buildcache writes it, under the index
// lock, by appending (its size grows) or by replacing it together with
// index.json.

// settleMargin is longer than a tick of the clocks file systems stamp
// times with (the kernel's coarse clock, at most 10 ms); times with no
// sub-second part come from a file system that keeps seconds.
const (
	settleMargin       = 20 * time.Millisecond
	settleMarginSecond = 2 * time.Second
)

// fileID identifies one version of a file, cheaply; the zero value is a
// file that does not exist.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns since the epoch
}

func statID(p string) (fileID, error) {
	var st unix.Stat_t
	err := unix.Lstat(p, &st)
	if errors.Is(err, unix.ENOENT) {
		return fileID{}, nil
	}
	if err != nil {
		return fileID{}, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	return idOf(&st), nil
}

func idOf(st *unix.Stat_t) fileID {
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// settledAt reports whether any write after read would change id.
func (id fileID) settledAt(read time.Time) bool {
	margin := settleMargin
	if id.mtime%int64(time.Second) == 0 {
		margin = settleMarginSecond
	}
	return read.UnixNano()-id.mtime > int64(margin)
}

// indexView is the parsed roots. Readers hold Store.viewMu shared and
// copy what they return; refreshes change it holding viewMu exclusively
// and the index lock (shared, or exclusive when writing).
type indexView struct {
	gen uint64 // grows whenever the roots change, in this process

	index        fileID
	indexSum     uint64           // maphash of index.json's bytes
	indexSettled bool             // a change to index.json will change its fileID
	header       v1.IndexManifest // index.json without its manifests

	journal journalState

	roots  []v1.Descriptor // index.json's, then the journal's
	byName map[string]int  // first root of each reference name
}

// viewState is a Store's view and what guards it.
type viewState struct {
	mu   sync.RWMutex
	v    *indexView
	seed maphash.Seed
	gen  uint64 // last generation handed out
}

func (s *Store) indexPath() string   { return filepath.Join(s.root, indexFile) }
func (s *Store) journalPath() string { return filepath.Join(s.root, privateDir, journalName) }

// withView calls fn with a view that reflects index.json and the journal
// as they are now. fn must not keep or change what it is given.
func (s *Store) withView(ctx context.Context, fn func(v *indexView)) error {
	iid, err := statID(s.indexPath())
	if err != nil {
		return err
	}
	jid, err := statID(s.journalPath())
	if err != nil {
		return err
	}
	vs := &s.view
	vs.mu.RLock()
	if v := vs.v; v != nil && v.indexSettled && v.index == iid && v.journal.id == jid {
		fn(v)
		due := v.journal.compactionDue(s.opts.now())
		vs.mu.RUnlock()
		if due {
			s.compactSoon(ctx)
		}
		return nil
	}
	vs.mu.RUnlock()

	l, err := lockIndexShared(ctx, s.indexLock)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if err := s.refreshLocked(ctx); err != nil {
		return err
	}
	vs.mu.RLock()
	defer vs.mu.RUnlock()
	fn(vs.v)
	return nil
}

// lockIndexShared takes the index lock shared, so that no buildcache
// writer is between its two files. A store this process may not write
// (a read-only mount) cannot be locked, nor written by anyone: it is
// read unlocked.
func lockIndexShared(ctx context.Context, path string) (*fileLock, error) {
	l, err := lockFile(ctx, path, false)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
		return nil, nil
	}
	return l, err
}

// refreshLocked brings the view up to date with index.json and the
// journal. The caller holds the index lock, shared or exclusive.
func (s *Store) refreshLocked(ctx context.Context) error {
	vs := &s.view
	vs.mu.Lock()
	defer vs.mu.Unlock()
	old := vs.v
	j, tail, continued, err := readJournal(s.journalPath(), journalOf(old))
	if err != nil {
		return err
	}
	read := time.Now()
	iid, err := statID(s.indexPath())
	if err != nil {
		return err
	}
	if old != nil && continued && old.index == iid && old.indexSettled {
		return s.applyTail(old, j, tail)
	}
	raw, im, err := s.readIndex(ctx)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		raw, im = nil, &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	case err != nil:
		return err
	}
	sum := maphash.Bytes(vs.seed, raw)
	settled := iid.settledAt(read)
	if old != nil && sum == old.indexSum && continued {
		old.index, old.indexSettled = iid, settled // the same bytes: nothing to parse
		return s.applyTail(old, j, tail)
	}
	v := &indexView{index: iid, indexSum: sum, indexSettled: settled, header: *im}
	v.header.Manifests = nil
	v.roots = im.Manifests
	v.byName = make(map[string]int, len(im.Manifests))
	for i, d := range v.roots {
		if n := d.Annotations[cache.AnnotationRefName]; n != "" {
			if _, dup := v.byName[n]; !dup {
				v.byName[n] = i
			}
		}
	}
	vs.v = v
	return s.applyTail(v, j, j.records) // index.json changed: apply the whole journal
}

// applyTail applies records newly read from the journal, whose state is
// now j, to v, and gives v a new generation. The caller holds view.mu.
func (s *Store) applyTail(v *indexView, j journalState, tail []rootRecord) error {
	changed := len(tail) > 0 || v.gen == 0
	for _, r := range tail {
		v.roots, v.byName = setRoot(v.roots, v.byName, r.Desc)
	}
	v.journal = j
	if changed {
		s.view.gen++
		v.gen = s.view.gen
	}
	return nil
}

// setRoot makes desc the root of its name in roots (indexed by byName):
// it takes the place of the first root of that name, or is appended.
// Compaction writes index.json by the same rule, so the view and the
// file agree on the order.
func setRoot(roots []v1.Descriptor, byName map[string]int, desc v1.Descriptor) ([]v1.Descriptor, map[string]int) {
	n := desc.Annotations[cache.AnnotationRefName]
	if i, ok := byName[n]; ok {
		roots[i] = desc
		return roots, byName
	}
	byName[n] = len(roots)
	return append(roots, desc), byName
}

func journalOf(v *indexView) journalState {
	if v == nil {
		return journalState{}
	}
	return v.journal
}

// Index returns the roots: index.json with the roots recorded since its
// last compaction (see RecordRoot). The result is the caller's own copy.
func (s *Store) Index(ctx context.Context) (*v1.IndexManifest, error) {
	var im *v1.IndexManifest
	err := s.withView(ctx, func(v *indexView) {
		cp := v.header
		cp.Annotations = maps.Clone(v.header.Annotations)
		cp.Manifests = make([]v1.Descriptor, len(v.roots))
		for i, d := range v.roots {
			cp.Manifests[i] = copyDescriptor(d)
		}
		im = &cp
	})
	return im, err
}

// Root implements cache.RootLookup: a map lookup in the view.
func (s *Store) Root(ctx context.Context, name string) (v1.Descriptor, bool, error) {
	var (
		d     v1.Descriptor
		found bool
	)
	err := s.withView(ctx, func(v *indexView) {
		if i, ok := v.byName[name]; ok {
			d, found = copyDescriptor(v.roots[i]), true
		}
	})
	return d, found, err
}

// rootsGeneration identifies the current roots in this process: it
// changes whenever they do, which is what a cache of what they reach
// must be keyed on (index.json alone does not change when a root is
// journalled).
func (s *Store) rootsGeneration(ctx context.Context) (uint64, error) {
	var gen uint64
	err := s.withView(ctx, func(v *indexView) { gen = v.gen })
	return gen, err
}

func copyDescriptor(d v1.Descriptor) v1.Descriptor {
	d.Annotations = maps.Clone(d.Annotations)
	d.URLs = slices.Clone(d.URLs)
	d.Data = slices.Clone(d.Data)
	if d.Platform != nil {
		p := *d.Platform
		p.OSFeatures = slices.Clone(p.OSFeatures)
		p.Features = slices.Clone(p.Features)
		d.Platform = &p
	}
	return d
}
