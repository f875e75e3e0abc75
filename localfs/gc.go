package localfs

import (
	"bytes"
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
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
)

// Index reads index.json, the layout's list of roots.
func (s *Store) Index(ctx context.Context) (*v1.IndexManifest, error) {
	_, im, err := s.readIndex(ctx)
	return im, err
}

// readIndex reads and parses index.json; raw is nil if there is none.
// BuildKit's client rewrites index.json in place (client/ociindex: WriteAt,
// then Truncate) under its lock, so a read without the lock may see half
// of each version: a file that does not parse is read again holding the
// lock, which waits the writer out.
func (s *Store) readIndex(ctx context.Context) (raw []byte, im *v1.IndexManifest, err error) {
	p := filepath.Join(s.root, indexFile)
	raw, im, err = parseIndexFile(p)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return raw, im, err
	}
	l, lerr := lockOCIIndex(ctx, p+ociIndexLockSuffix, false)
	if lerr != nil {
		return nil, nil, lerr
	}
	defer l.Unlock()
	return parseIndexFile(p)
}

func parseIndexFile(p string) ([]byte, *v1.IndexManifest, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("localfs: reading %s: %w", p, err)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(b, &im); err != nil {
		return nil, nil, fmt.Errorf("localfs: %s is not an OCI index: %w", p, err)
	}
	return b, &im, nil
}

// maxIndexAttempts bounds how often UpdateIndex starts over because
// BuildKit changed index.json while fn ran.
const maxIndexAttempts = 100

// UpdateIndex changes index.json under an exclusive lock shared by every
// process using the directory: it reads the current index, lets fn change
// it, and writes it back atomically. If fn fails, nothing is written.
//
// BuildKit's client, exporting a type=local cache into the directory,
// changes index.json too, under its own lock (index.json.lock, see
// client/ociindex). UpdateIndex prepares the new index outside that lock
// and takes it only to check that index.json is still what fn saw and to
// rename the new one into place: BuildKit does not wait for the lock (a
// Put that finds it taken fails), so it is held for microseconds. If
// BuildKit changed the index meanwhile, UpdateIndex starts over: fn may
// run more than once, each time on the index as it then is, and should do
// nothing but edit it.
func (s *Store) UpdateIndex(ctx context.Context, fn func(*v1.IndexManifest) error) error {
	l, err := lockFile(ctx, s.indexLock, true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	p := filepath.Join(s.root, indexFile)
	for attempt := 1; ; attempt++ {
		before, im, err := s.readIndex(ctx)
		if errors.Is(err, fs.ErrNotExist) {
			before, im, err = nil, &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}, nil
		}
		if err != nil {
			return err
		}
		if err := fn(im); err != nil {
			return err
		}
		if im.Manifests == nil {
			im.Manifests = []v1.Descriptor{} // "manifests": [] as the spec requires
		}
		b, err := json.Marshal(im)
		if err != nil {
			return fmt.Errorf("localfs: encoding index.json: %w", err)
		}
		tmp, err := writeTemp(s.tmpDir, indexFile, b)
		if err != nil {
			return fmt.Errorf("localfs: writing index.json: %w", noSpace(err))
		}
		done, err := commitIndex(ctx, tmp, p, before)
		if err != nil || !done {
			os.Remove(tmp)
		}
		if err != nil {
			return fmt.Errorf("localfs: writing index.json: %w", err)
		}
		if done {
			return syncDir(s.root)
		}
		if attempt == maxIndexAttempts {
			return fmt.Errorf("localfs: index.json kept changing during %d attempts to update it", attempt)
		}
	}
}

// commitIndex renames tmp to p if p still holds before, under BuildKit's
// index lock. It reports whether it did.
func commitIndex(ctx context.Context, tmp, p string, before []byte) (bool, error) {
	lockPath := p + ociIndexLockSuffix
	for {
		l, err := lockOCIIndex(ctx, lockPath, true)
		if err != nil {
			return false, err
		}
		now, err := os.ReadFile(p)
		switch {
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			l.Unlock()
			return false, err
		case !bytes.Equal(now, before):
			l.Unlock()
			return false, nil // BuildKit changed it: start over
		case !l.stillAt(lockPath):
			l.Unlock()
			continue // the lock file was removed since it was locked: see lockOCIIndex
		}
		err = os.Rename(tmp, p)
		l.Unlock()
		return err == nil, err
	}
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

// ociIndexLockSuffix makes BuildKit's index lock file from index.json's
// path, as client/ociindex does.
const ociIndexLockSuffix = ".lock"

// ociIndexLock is a flock(2) on BuildKit's index.json.lock, the lock
// gofrs/flock takes for client/ociindex. f is nil when the lock file could
// not be opened for lack of permission (BuildKit's client, run by another
// user, made it 0600): then there is nothing to exclude it with, as
// ociindex itself skips the lock for reading in that case.
type ociIndexLock struct{ f *os.File }

// lockOCIIndex takes BuildKit's index lock, shared or exclusive, waiting
// until ctx is done. ociindex removes the lock file after every use
// (os.RemoveAll after Unlock), so the file locked may already be unlinked,
// and whoever opens the path next creates and locks another one: a lock
// counts only if, once taken, its file is still the one at the path.
// Otherwise it is dropped and taken again. commitIndex checks again just
// before it renames, for an unlink that comes after the lock was taken.
func lockOCIIndex(ctx context.Context, path string, exclusive bool) (*ociIndexLock, error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	wait := 50 * time.Microsecond
	for {
		f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
			return &ociIndexLock{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("localfs: opening lock %s: %w", path, err)
		}
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			l := &ociIndexLock{f: f}
			if l.stillAt(path) {
				return l, nil
			}
			f.Close()
			continue // removed under us: lock the file now at the path
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("localfs: locking %s: %w", path, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("localfs: waiting for lock %s: %w", path, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(wait*2, 5*time.Millisecond) // BuildKit holds it briefly
	}
}

// stillAt reports whether the locked file is the one at path.
func (l *ociIndexLock) stillAt(path string) bool {
	if l.f == nil {
		return true
	}
	var held, now unix.Stat_t
	if unix.Fstat(int(l.f.Fd()), &held) != nil || unix.Stat(path, &now) != nil {
		return false
	}
	return held.Dev == now.Dev && held.Ino == now.Ino
}

// Unlock releases the lock. The lock file stays: removing it is what
// makes ociindex's lock unreliable.
func (l *ociIndexLock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// reachable returns the blobs that index.json's roots reach: the roots and,
// recursively, the manifests, configs and layers that index and manifest
// blobs reference. Missing or unreadable manifests end their branch. The
// value says whether the blob must be present: roots and what a manifest
// references must, while an index's children may be absent (a resolver
// fetches only the platforms it was asked for).
func (s *Store) reachable(ctx context.Context) (map[string]bool, error) {
	im, err := s.Index(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var visit func(desc v1.Descriptor, required bool) error
	visit = func(desc v1.Descriptor, required bool) error {
		if cache.ValidateDigest(desc.Digest) != nil {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if req, ok := seen[desc.Digest.Hex]; ok {
			seen[desc.Digest.Hex] = req || required
			return nil
		}
		seen[desc.Digest.Hex] = required
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
	for _, desc := range im.Manifests {
		if err := visit(desc, true); err != nil {
			return nil, err
		}
	}
	return seen, nil
}

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
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
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
	enough := func(freed int64) bool {
		withinBudget := s.opts.maxBytes == 0 || used-freed+need <= s.opts.maxBytes
		return withinBudget && freed >= freeAtLeast
	}
	var evictable int64
	for _, b := range blobs {
		if _, reached := keep[b.hex]; !reached {
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
		return 0, fmt.Errorf("%d bytes needed (%s, %d to free on disk); blobs use %d bytes, of which only %d may be evicted (the rest is reachable from index.json): %w",
			need, budget, freeAtLeast, used, evictable, cache.ErrNoSpace)
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].lastUse.Before(blobs[j].lastUse) })
	var freed int64
	for _, b := range blobs {
		if enough(freed) {
			break
		}
		if _, reached := keep[b.hex]; reached {
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

// GCOption configures one GC run.
type GCOption func(*gcOptions)

type gcOptions struct {
	maxBytes int64
	ttl      time.Duration
}

// GCMaxBytes collects until the blobs fit in n bytes (default: the
// store's WithMaxBytes).
func GCMaxBytes(n int64) GCOption { return func(o *gcOptions) { o.maxBytes = n } }

// GCTTL collects blobs unused for longer than d (default: the store's
// WithTTL).
func GCTTL(d time.Duration) GCOption { return func(o *gcOptions) { o.ttl = d } }

// GCReport says what a GC run did.
type GCReport struct {
	Removed      int   // blobs removed
	FreedBytes   int64 // their bytes
	Kept         int   // blobs kept
	KeptBytes    int64
	Roots        int // blobs reachable from index.json, never collected
	TempsRemoved int // abandoned temp files swept
}

// GC removes abandoned temp files, blobs that no root reaches and that
// were unused for longer than the TTL, and then the least recently used
// unreachable blobs until the rest fit the byte budget. Blobs reachable
// from index.json are kept. It holds the exclusive GC lock: writers in
// other processes wait to commit, readers are not disturbed (an open blob
// stays readable after it is removed).
func (s *Store) GC(ctx context.Context, opts ...GCOption) (GCReport, error) {
	o := gcOptions{maxBytes: s.opts.maxBytes, ttl: s.opts.ttl}
	for _, opt := range opts {
		opt(&o)
	}
	var rep GCReport
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
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].lastUse.Before(blobs[j].lastUse) })
	cutoff := s.opts.now().Add(-o.ttl)
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if _, reached := keep[b.hex]; reached {
			rep.Roots++
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

// BadBlob is a blob that failed verification.
type BadBlob struct {
	Digest v1.Hash
	Err    error
}

// VerifyReport says what Verify found.
type VerifyReport struct {
	Checked int       // blobs hashed
	Bytes   int64     // bytes hashed
	Bad     []BadBlob // blobs whose bytes do not match their name
	Removed int       // bad blobs removed (VerifyRemove)
	Missing []v1.Hash // blobs that index.json reaches but that are absent
}

// VerifyOption configures Verify.
type VerifyOption func(*verifyOptions)

type verifyOptions struct{ remove bool }

// VerifyRemove removes the bad blobs Verify finds (default: only report).
func VerifyRemove() VerifyOption { return func(o *verifyOptions) { o.remove = true } }

// Verify hashes every blob and checks that index.json's roots and what
// they reference are present. It reports bad blobs and, with
// VerifyRemove, removes them.
func (s *Store) Verify(ctx context.Context, opts ...VerifyOption) (VerifyReport, error) {
	var o verifyOptions
	for _, opt := range opts {
		opt(&o)
	}
	var rep VerifyReport
	blobs, _, err := s.scan(ctx)
	if err != nil {
		return rep, err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		d := v1.Hash{Algorithm: "sha256", Hex: b.hex}
		f, err := os.Open(s.blobPath(d))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("localfs: verify %s: %w", d, err)
		}
		vr := verify.NewReader(f, d, b.size, cache.ErrCorrupt)
		_, err = io.CopyBuffer(io.Discard, vr, *bp)
		rep.Checked++
		rep.Bytes += vr.N()
		if err == nil && !vr.Verified() {
			err = fmt.Errorf("%s: %w", d, cache.ErrCorrupt)
		}
		if err != nil {
			rep.Bad = append(rep.Bad, BadBlob{Digest: d, Err: err})
			if o.remove && errors.Is(err, cache.ErrCorrupt) {
				s.stats.Corruptions.Add(1)
				s.removeIfSame(d, f)
				rep.Removed++
			}
		}
		f.Close()
	}
	keep, err := s.reachable(ctx)
	if err != nil {
		return rep, err
	}
	for hex, required := range keep {
		if !required {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.blobDir, hex)); errors.Is(err, fs.ErrNotExist) {
			rep.Missing = append(rep.Missing, v1.Hash{Algorithm: "sha256", Hex: hex})
		}
	}
	sort.Slice(rep.Missing, func(i, j int) bool { return rep.Missing[i].Hex < rep.Missing[j].Hex })
	return rep, nil
}
