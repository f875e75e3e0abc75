package localfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

// readIndex reads and parses index.json; raw is nil if there is none.
// BuildKit's client rewrites index.json in place (client/ociindex: WriteAt,
// then Truncate) under its lock, so a read without the lock may see half
// of each version: a file that does not parse is read again holding the
// lock, which waits the writer out.
func (s *Store) readIndex(ctx context.Context) (raw []byte, im *v1.IndexManifest, err error) {
	p := s.indexPath()
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
	b, err := readRegular(p)
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
// it, and writes it back atomically. If fn fails, nothing is written. fn
// sees the roots recorded in the journal too (see RecordRoot): they are
// written into index.json with fn's changes, and the journal emptied.
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
	if fn == nil {
		return errors.New("localfs: UpdateIndex: nil function")
	}
	l, err := lockFile(ctx, s.indexLock, true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	return s.rewriteIndexLocked(ctx, fn)
}

// rewriteIndexLocked writes index.json with the journal's roots applied
// and then fn's changes, and starts an empty journal. With fn nil it is
// compaction: nothing is written if the journal has no records. The
// caller holds the index lock exclusively, so no root is journalled
// meanwhile.
func (s *Store) rewriteIndexLocked(ctx context.Context, fn func(*v1.IndexManifest) error) error {
	if err := s.refreshLocked(ctx); err != nil {
		return err
	}
	s.view.mu.RLock()
	recs := s.view.v.journal.records
	s.view.mu.RUnlock()
	if fn == nil && len(recs) == 0 {
		return nil
	}
	p := s.indexPath()
	for attempt := 1; ; attempt++ {
		before, im, err := s.readIndex(ctx)
		if errors.Is(err, fs.ErrNotExist) {
			before, im, err = nil, &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}, nil
		}
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			byName := make(map[string]int, len(im.Manifests))
			for i, d := range im.Manifests {
				if n := d.Annotations[cache.AnnotationRefName]; n != "" {
					if _, dup := byName[n]; !dup {
						byName[n] = i
					}
				}
			}
			for _, r := range recs {
				im.Manifests, byName = setRoot(im.Manifests, byName, copyDescriptor(r.Desc))
			}
		}
		if fn != nil {
			if err := fn(im); err != nil {
				return err
			}
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
			if err := syncDir(s.root); err != nil {
				return err
			}
			if len(recs) > 0 {
				if err := s.resetJournal(); err != nil {
					// index.json holds the records: applying them again is harmless.
					return fmt.Errorf("localfs: starting a new root journal: %w", err)
				}
			}
			_ = s.refreshLocked(ctx) // a failure is retried by the next read
			return nil
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
		now, err := readRegular(p)
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
