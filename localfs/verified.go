package localfs

import (
	"container/list"
	"fmt"
	"os"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// A blob sent from its file (OpenFile) is trusted without hashing it
// again when the store hashed that same file moments ago and the file has
// not changed since. "The same file, unchanged" is its identity: device,
// inode, size, mtime and ctime (fileID). The kernel sets ctime to the
// current time on every change to a file — a write, a truncation, a
// change of times — so a change of bytes shows in the identity unless it
// lands within the same tick of the file system's clock as the file's
// previous change and also puts mtime back (localfs/doc.go,
// "Verification", lists what such a tampering needs).
//
// The store changes a blob's times itself: its mtime is the LRU clock,
// touched when the blob is used. Those changes are its own, so they carry
// what was verified over: the record is re-keyed to the identity after
// the touch, and the BlobFiles sending that file go on. Any other change
// (by another process, or a change the store did not make) starts a new
// generation of the file: the record no longer matches, and a send that
// began before it fails before its last byte.

// verifiedRecord remembers, for a bounded number of blobs (the most
// recently verified) and a bounded time, the identity of the file each
// was last found to match its digest in.
type verifiedRecord struct {
	mu      sync.Mutex
	entries map[string]*list.Element // digest hex -> its *verifiedEntry in order
	order   list.List                // most recently verified first
}

type verifiedEntry struct {
	hex string
	id  fileID
	at  time.Time // when it was hashed
}

// valid reports whether blob hex was verified in the file of identity id
// less than ttl before now.
func (r *verifiedRecord) valid(hex string, id fileID, now time.Time, ttl time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	el := r.entries[hex]
	if el == nil {
		return false
	}
	e := el.Value.(*verifiedEntry)
	return e.id == id && !e.at.After(now) && now.Sub(e.at) < ttl
}

// put records that blob hex matched in the file of identity id, hashed
// at now, keeping at most max entries.
func (r *verifiedRecord) put(hex string, id fileID, now time.Time, max int) {
	if max <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries == nil {
		r.entries = map[string]*list.Element{}
	}
	if el := r.entries[hex]; el != nil {
		e := el.Value.(*verifiedEntry)
		e.id, e.at = id, now
		r.order.MoveToFront(el)
		return
	}
	r.entries[hex] = r.order.PushFront(&verifiedEntry{hex: hex, id: id, at: now})
	for r.order.Len() > max {
		delete(r.entries, r.order.Remove(r.order.Back()).(*verifiedEntry).hex)
	}
}

// rekey carries blob hex's record over the store's own touch of its
// file, which changed its identity from from to to.
func (r *verifiedRecord) rekey(hex string, from, to fileID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el := r.entries[hex]; el != nil && el.Value.(*verifiedEntry).id == from {
		el.Value.(*verifiedEntry).id = to
	}
}

// drop forgets blob hex.
func (r *verifiedRecord) drop(hex string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el := r.entries[hex]; el != nil {
		r.order.Remove(el)
		delete(r.entries, hex)
	}
}

// fileKey is a file's inode on its device: which file, whatever its
// contents.
type fileKey struct{ dev, ino uint64 }

func (id fileID) key() fileKey { return fileKey{id.dev, id.ino} }

// fileWatch follows one blob file's identity while this process has it
// open for sending (or is touching it). Its generation changes whenever
// the identity was found changed by anything but the store's own touch.
type fileWatch struct {
	key fileKey

	mu      sync.Mutex
	last    fileID   // the identity last seen, or set by a touch
	gen     uint64   // bumped by every change that is not a touch
	hashing *hashRun // the hash of the file in progress, if any
}

// observeLocked compares the file's identity now with the last one
// seen: any difference starts a new generation.
func (w *fileWatch) observeLocked(cur fileID) {
	if cur != w.last {
		w.gen++
		w.last = cur
	}
}

// fileWatches are the watched files, each kept while it is held.
type fileWatches struct {
	mu   sync.Mutex
	m    map[fileKey]*fileWatch
	refs map[*fileWatch]int
}

func (ws *fileWatches) acquire(k fileKey) *fileWatch {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m, ws.refs = map[fileKey]*fileWatch{}, map[*fileWatch]int{}
	}
	w := ws.m[k]
	if w == nil {
		w = &fileWatch{key: k}
		ws.m[k] = w
	}
	ws.refs[w]++
	return w
}

// hold takes one more hold on w, which the caller holds already.
func (ws *fileWatches) hold(w *fileWatch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.refs[w]++
}

func (ws *fileWatches) release(w *fileWatch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.refs[w]--; ws.refs[w] == 0 {
		delete(ws.refs, w)
		delete(ws.m, w.key)
	}
}

// fileIDOf is the identity of open file f.
func fileIDOf(f *os.File) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileID{}, fmt.Errorf("fstat %s: %w", f.Name(), err)
	}
	return idOf(&st), nil
}

// watchOpened starts watching blob d's file f, just opened, and touches
// it if its last use is not recent (as every read of a blob does),
// carrying what was verified of it over the touch. It returns the watch,
// held, and the file's generation and identity; the caller releases the
// watch.
func (s *Store) watchOpened(d v1.Hash, f *os.File) (w *fileWatch, gen uint64, id fileID, err error) {
	first, err := fileIDOf(f)
	if err != nil {
		return nil, 0, fileID{}, err
	}
	w = s.watches.acquire(first.key())
	w.mu.Lock()
	defer w.mu.Unlock()
	pre, err := fileIDOf(f) // again, under the lock: a touch since would look foreign
	if err != nil {
		s.watches.release(w)
		return nil, 0, fileID{}, err
	}
	w.observeLocked(pre)
	if _, due := s.touchDue(time.Unix(0, pre.mtime)); due {
		s.touchOpen(f, time.Unix(0, pre.mtime))
		s.touchedLocked(d, w, pre, func() (fileID, error) { return fileIDOf(f) })
	}
	return w, w.gen, w.last, nil
}

// touchStored is Put's touch of blob d, already stored at path, which
// it found last used at last: through the path, never a link's target,
// and carrying what was verified of the file over the touch.
func (s *Store) touchStored(d v1.Hash, path string, last time.Time) {
	if _, due := s.touchDue(last); !due {
		return
	}
	first, err := statID(path)
	if err != nil || first == (fileID{}) {
		return
	}
	w := s.watches.acquire(first.key())
	defer s.watches.release(w)
	w.mu.Lock()
	defer w.mu.Unlock()
	pre, err := statID(path) // again, under the lock: a touch since would look foreign
	if err != nil || pre.key() != first.key() {
		return // replaced meanwhile: a new file needs no touch
	}
	w.observeLocked(pre)
	s.touch(path, last)
	s.touchedLocked(d, w, pre, func() (fileID, error) { return statID(path) })
}

// touchedLocked follows the store's own touch of a watched file, whose
// identity was pre just before it: what was verified of pre holds for
// the identity after it, which stat reads.
func (s *Store) touchedLocked(d v1.Hash, w *fileWatch, pre fileID, stat func() (fileID, error)) {
	post, err := stat()
	if err != nil || post.key() != pre.key() || post.size != pre.size || post == pre {
		return // not the same file any more, or not touched: the next look sees it
	}
	s.verified.rekey(d.Hex, pre, post)
	w.last = post
}
