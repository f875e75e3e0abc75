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
	"strings"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

const (
	layoutFile    = "oci-layout"
	indexFile     = "index.json"
	layoutVersion = "1.0.0"
	privateDir    = ".buildcache" // ours alone; OCI tools ignore it
	tmpDirName    = "tmp"
	gcLockName    = "gc.lock"
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
	indexLock string
	opts      options

	stats cache.Counters
	used  atomic.Int64 // bytes of blobs, as this process last counted them

	mu      sync.Mutex
	writing map[string]*digestLock // in-process writers by digest hex
}

var (
	_ cache.LayerCache    = (*Store)(nil)
	_ cache.StatsReporter = (*Store)(nil)
	_ cache.RootIndex     = (*Store)(nil)

	// The deferred sync a registry.Resolver uses for a pull when its
	// store offers it (registry's deferredSyncer).
	_ interface {
		PutDeferred(ctx context.Context, d v1.Hash, size int64, r io.Reader) error
		SyncBlobs(ctx context.Context) error
	} = (*Store)(nil)
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
		indexLock: filepath.Join(root, privateDir, indexLockName),
		opts:      o,
		writing:   map[string]*digestLock{},
	}
	for _, d := range []string{s.blobDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("localfs: Open %s: %w", root, noSpace(err))
		}
	}
	if err := s.initLayout(); err != nil {
		return nil, err
	}
	s.sweepTemps()
	if o.maxBytes > 0 {
		if _, err := s.countUsed(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Dir is the store's root: an OCI image layout directory that
// go-containerregistry's layout package, crane, skopeo (oci:DIR) and
// BuildKit's type=local cache can read.
func (s *Store) Dir() string { return s.root }

// Stats reports what the store has done since it was opened, in this
// process.
func (s *Store) Stats() cache.Stats { return s.stats.Snapshot() }

func (s *Store) blobPath(d v1.Hash) string { return filepath.Join(s.blobDir, d.Hex) }

func (s *Store) initLayout() error {
	lp := filepath.Join(s.root, layoutFile)
	b, err := os.ReadFile(lp)
	switch {
	case err == nil:
		var l struct {
			Version string `json:"imageLayoutVersion"`
		}
		if err := json.Unmarshal(b, &l); err != nil || l.Version != layoutVersion {
			return fmt.Errorf("localfs: %s is not an OCI image layout version %s (found %q)", lp, layoutVersion, strings.TrimSpace(string(b)))
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := writeFileAtomic(s.tmpDir, lp, []byte(`{"imageLayoutVersion":"`+layoutVersion+`"}`)); err != nil {
			return fmt.Errorf("localfs: creating %s: %w", lp, noSpace(err))
		}
	default:
		return fmt.Errorf("localfs: reading %s: %w", lp, err)
	}
	ip := filepath.Join(s.root, indexFile)
	if _, err := os.Stat(ip); errors.Is(err, fs.ErrNotExist) {
		return s.UpdateIndex(context.Background(), func(*v1.IndexManifest) error { return nil })
	}
	_, err = s.Index(context.Background())
	return err
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
// older than the grace period, the leftovers of a killed process.
func (s *Store) sweepTemps() (removed int) {
	entries, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return 0
	}
	cutoff := s.opts.now().Add(-s.opts.tempGrace)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), tmpSuffix) {
			continue
		}
		p := filepath.Join(s.tmpDir, e.Name())
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if tryLockExclusive(f) {
			if os.Remove(p) == nil {
				removed++
			}
		}
		f.Close()
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
	info, err := os.Stat(s.blobPath(d))
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
	p := s.blobPath(d)
	info, err := os.Stat(p)
	if err != nil {
		return s.pathErr("delete", d, err)
	}
	if err := os.Remove(p); err != nil {
		return s.pathErr("delete", d, err)
	}
	s.used.Add(-info.Size())
	return nil
}

// Walk implements cache.Walker. Files in blobs/sha256 whose names are not
// digests are not blobs and are skipped.
func (s *Store) Walk(ctx context.Context, fn func(d v1.Hash, size int64) error) error {
	entries, err := os.ReadDir(s.blobDir)
	if err != nil {
		return fmt.Errorf("localfs: walking %s: %w", s.blobDir, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if !e.Type().IsRegular() || cache.ValidateDigest(d) != nil {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return fmt.Errorf("localfs: walking %s: %w", s.blobDir, err)
		}
		if err := fn(d, info.Size()); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) pathErr(op string, d v1.Hash, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("localfs: %s %s: %w", op, d, cache.ErrNotFound)
	}
	s.stats.Errors.Add(1)
	return fmt.Errorf("localfs: %s %s: %w", op, d, err)
}
