package localfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
)

const (
	layoutFile    = "oci-layout"
	indexFile     = "index.json"
	layoutVersion = "1.0.0"
	privateDir    = ".buildcache" // ours alone; OCI tools ignore it
	tmpDirName    = "tmp"
	gcLockName    = "gc.lock"
	gcWaitName    = "gc.wait"
	indexLockName = "index.lock"
	tmpSuffix     = ".tmp"
)

// Store is a LayerCache in a directory laid out as an OCI image layout.
// It is safe for concurrent use by many goroutines and many processes.
type Store struct {
	root      string
	blobDir   string
	tmpDir    string
	gcLock    string
	gcWait    string // writers waiting for gc.lock: lockGCShared
	indexLock string
	opts      options

	stats    *cache.Counters // not embedded: the counters' flusher holds them, not the Store
	counters *counterFile    // the lifetime counters, across processes (counters.go)
	usage    usage           // the bytes of blobs, shared by every process (usage.go)
	reach    reachCache      // the last reachability computed, by index.json version

	mu      sync.Mutex
	writing map[string]*digestLock // in-process writers by digest hex
	writes  writeSet               // Puts in progress, for Close: writes.go

	view  viewState // parsed roots: indexview.go
	roots rootQueue // journalled roots waiting to be written: journal.go

	// What OpenFile's sends need (blobfile.go, verified.go).
	verified      verifiedRecord
	watches       fileWatches
	verifiedHits  atomic.Uint64 // sends verified by the record alone
	verifiedBytes atomic.Uint64 // bytes hashed to verify sends
}

var (
	_ cache.LayerCacheCloser = (*Store)(nil)
	_ cache.StatsReporter    = (*Store)(nil)
	_ cache.RootIndex        = (*Store)(nil)
	_ cache.RootLookup       = (*Store)(nil)
	_ cache.RootRecorder     = (*Store)(nil)
	_ cache.Leaser           = (*Store)(nil)
	_ cache.DeferredSyncer   = (*Store)(nil)
	_ cache.CounterAdder     = (*Store)(nil)
)

type digestLock struct {
	mu   sync.Mutex
	refs int
}

// Open opens the store in dir, creating an empty OCI image layout if dir
// is empty or missing. A dir that holds something else (an oci-layout file
// of another version, an index.json that is not JSON) is an error, never
// overwritten. Abandoned temp files are swept.
func Open(dir string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if dir == "" {
		return nil, errors.New("localfs: Open: empty directory name")
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("localfs: Open %q: %w", dir, err)
	}
	s := &Store{
		root:      root,
		blobDir:   filepath.Join(root, "blobs", "sha256"),
		tmpDir:    filepath.Join(root, privateDir, tmpDirName),
		gcLock:    filepath.Join(root, privateDir, gcLockName),
		gcWait:    filepath.Join(root, privateDir, gcWaitName),
		indexLock: filepath.Join(root, privateDir, indexLockName),
		opts:      o,
		writing:   map[string]*digestLock{},
		view:      viewState{seed: maphash.MakeSeed()},
		usage:     usage{path: filepath.Join(root, privateDir, usageFileName)},
		stats:     &cache.Counters{},
	}
	s.counters = newCounterFile(root, s.tmpDir, s.stats)
	if err := s.ensureDirs(); err != nil {
		return nil, fmt.Errorf("localfs: Open %s: %w", root, noSpace(err))
	}
	if err := s.initLayout(); err != nil {
		return nil, err
	}
	s.sweepTemps()
	_ = s.CompactRoots(context.Background()) // roots a previous process journalled; a read-only store keeps its journal
	s.counters.startFlusher(s, countersFlushInterval)
	return s, nil
}

// ensureDirs makes the store's directories, and checks that none is a
// link to somewhere else: blobs/ and blobs/sha256 that are not real
// directories are refused (GC removes files there), our private
// directories are replaced. The private directory comes first: from the
// first entry Open makes in a new store, IsStore recognises it.
func (s *Store) ensureDirs() error {
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return err
	}
	for _, d := range []struct {
		path    string
		replace bool
	}{
		{filepath.Dir(s.tmpDir), true},
		{s.tmpDir, true},
		{filepath.Dir(s.blobDir), false},
		{s.blobDir, false},
	} {
		if err := ensureDir(d.path, d.replace); err != nil {
			return err
		}
	}
	return nil
}

// Dir is the store's root: an OCI image layout directory that
// go-containerregistry's layout package, crane, skopeo (oci:DIR) and
// BuildKit's type=local cache can read.
func (s *Store) Dir() string { return s.root }

// Stats reports what the store has done since it was opened, in this
// process; LifetimeStats sums every process that used the directory.
func (s *Store) Stats() cache.Stats { return s.stats.Snapshot() }

func (s *Store) blobPath(d v1.Hash) string { return filepath.Join(s.blobDir, d.Hex) }

// initLayout checks the layout of an existing store and completes that of
// a new one, in an order that any number of processes opening the
// directory at once can follow: each step is done only if it is not done
// yet, and oci-layout is written last, so that a directory with one is a
// complete layout. An oci-layout of another version is refused before
// anything is written.
func (s *Store) initLayout() error {
	lp := filepath.Join(s.root, layoutFile)
	b, err := readRegular(lp)
	haveLayout := err == nil
	switch {
	case err == nil:
		var l struct {
			Version string `json:"imageLayoutVersion"`
		}
		if err := json.Unmarshal(b, &l); err != nil || l.Version != layoutVersion {
			return fmt.Errorf("localfs: %s is not an OCI image layout version %s (found %q)", lp, layoutVersion, strings.TrimSpace(string(b)))
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("localfs: reading %s: %w", lp, err)
	}
	ip := filepath.Join(s.root, indexFile)
	if _, err := os.Lstat(ip); errors.Is(err, fs.ErrNotExist) {
		err = s.UpdateIndex(context.Background(), func(*v1.IndexManifest) error { return nil })
		if err != nil {
			return err
		}
	} else if _, err := s.Index(context.Background()); err != nil {
		return err
	}
	if haveLayout {
		return nil
	}
	if err := writeFileAtomic(s.tmpDir, lp, []byte(`{"imageLayoutVersion":"`+layoutVersion+`"}`)); err != nil {
		return fmt.Errorf("localfs: creating %s: %w", lp, noSpace(err))
	}
	return nil
}

// IsStore reports whether dir holds a store, or one that Open, in this
// process or another, is creating: Open makes the store's private
// directory (.buildcache) before any other entry and the oci-layout file
// last, so a directory with either is a store, complete or on its way.
// A missing or empty directory is not one yet, and Open makes it one.
// Callers that must not turn a directory of something else into a store
// check this (and emptiness) first; a directory with neither entry is
// then someone else's.
func IsStore(dir string) bool {
	for _, name := range []string{layoutFile, privateDir} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// writeFileAtomic writes data to path through a synced temp file in
// tmpDir and a rename, so readers see the old or the new file, never half.
func writeFileAtomic(tmpDir, path string, data []byte) error {
	tmp, err := writeTemp(tmpDir, filepath.Base(path), data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// writeTemp writes data to a synced temp file in tmpDir, locked while it
// is written so that no sweep takes it for a dead writer's, and returns
// its name.
func writeTemp(tmpDir, base string, data []byte) (string, error) {
	f, err := os.CreateTemp(tmpDir, base+"-*"+tmpSuffix)
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	err = lockExclusive(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// syncDir makes a rename into dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sweepTemps removes temp files that no live writer holds and that are
// older than the grace period, the leftovers of a killed process. It
// works through a descriptor of the temp directory opened without
// following links, so a temp directory replaced by a link to elsewhere
// is left alone rather than swept.
func (s *Store) sweepTemps() (removed int) {
	dir, err := openDirNoFollow(s.root, privateDir, tmpDirName)
	if err != nil {
		return 0
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return 0
	}
	dfd := int(dir.Fd())
	cutoff := s.opts.now().Add(-s.opts.tempGrace)
	for _, name := range names {
		if !strings.HasSuffix(name, tmpSuffix) {
			continue
		}
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || time.Unix(st.Mtim.Unix()).After(cutoff) {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			if unix.Unlinkat(dfd, name, 0) == nil { // a link or a FIFO of ours: junk, removed itself
				removed++
			}
			continue
		}
		fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			if unix.Unlinkat(dfd, name, 0) == nil {
				removed++
			}
		}
		unix.Close(fd)
	}
	return removed
}

func (s *Store) lockDigest(hex string) func() {
	s.mu.Lock()
	l := s.writing[hex]
	if l == nil {
		l = &digestLock{}
		s.writing[hex] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.writing, hex)
		}
		s.mu.Unlock()
	}
}

// Stat implements cache.Stater.
func (s *Store) Stat(ctx context.Context, d v1.Hash) (int64, error) {
	if err := cache.ValidateDigest(d); err != nil {
		return 0, err
	}
	var info os.FileInfo
	err := s.underLease(ctx, d, func() (err error) {
		info, err = lstatRegular(s.blobPath(d))
		return err
	})
	if errors.Is(err, errNotRegular) {
		_, err = s.dropIrregular("stat", d, err)
		return 0, err
	}
	if err != nil {
		return 0, s.pathErr("stat", d, err)
	}
	return info.Size(), nil
}

// Delete implements cache.Deleter.
func (s *Store) Delete(ctx context.Context, d v1.Hash) error {
	if err := cache.ValidateDigest(d); err != nil {
		return err
	}
	// Under the shared GC lock, so that a collector's count of blobs/
	// and the usage record agree.
	l, err := s.lockGCShared(ctx)
	if err != nil {
		return err
	}
	defer l.Unlock()
	p := s.blobPath(d)
	info, err := os.Lstat(p) // a link is removed itself
	if err != nil {
		return s.pathErr("delete", d, err)
	}
	if err := os.Remove(p); err != nil {
		return s.pathErr("delete", d, err)
	}
	if info.Mode().IsRegular() {
		s.usage.add(ctx, -info.Size())
	}
	return nil
}

// Walk implements cache.Walker. Files in blobs/sha256 whose names are not
// digests are not blobs and are skipped.
// The directory is read in batches, so a walk holds no per-blob data.
func (s *Store) Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error {
	return s.eachBlob(ctx, func(name string, info fs.FileInfo) error {
		return fn(v1.Hash{Algorithm: "sha256", Hex: name}, info.Size())
	})
}

func (s *Store) pathErr(op string, d v1.Hash, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("localfs: %s %s: %w", op, d, cache.ErrNotFound)
	}
	s.stats.Errors.Add(1)
	return fmt.Errorf("localfs: %s %s: %w", op, d, err)
}
