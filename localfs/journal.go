package localfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
)

// Rewriting index.json for each new root costs in proportion to the
// roots (3 MB and two fsyncs at 10,000). RecordRoot instead appends the
// root to a journal, .buildcache/roots.journal, and fsyncs that; the view
// (indexview.go) and so Index, Root and GC see index.json with the
// journal applied. Compaction rewrites index.json with the journal's
// roots and starts an empty journal: when the journal holds
// compactEvery records, when its oldest record is compactAfter old (on
// the next call to the store after that), at Open, and at every
// UpdateIndex. Until then, tools that read only index.json (BuildKit,
// skopeo, umoci) do not see the newest roots; a crash loses nothing,
// since the journal is durable and is applied at the next Open.
//
// The journal is one JSON value per line: a header naming its epoch
// (random, new at each compaction), then records. Appends are made under
// the exclusive index lock; a torn last line, left by a killed writer,
// is ignored by readers and cut by the next writer. A record replaces
// the root of its name (setRoot), so applying the journal twice, after a
// crash between compaction's two renames, changes nothing.
const (
	journalName   = "roots.journal"
	compactEvery  = 512
	compactAfter  = 5 * time.Second
	journalHeader = "buildcache-roots-journal"
)

type journalLine struct {
	Kind  string         `json:"kind,omitempty"` // journalHeader in the first line
	Epoch string         `json:"epoch,omitempty"`
	At    time.Time      `json:"at,omitzero"`
	Desc  *v1.Descriptor `json:"desc,omitempty"`
}

type rootRecord struct {
	At   time.Time
	Desc v1.Descriptor
}

// journalState is what a view has read of the journal.
type journalState struct {
	id      fileID
	epoch   string // "" for no journal, or one with no header yet
	offset  int64  // end of the last whole line read
	records []rootRecord
}

func (j journalState) compactionDue(now time.Time) bool {
	return len(j.records) >= compactEvery || (len(j.records) > 0 && now.Sub(j.records[0].At) >= compactAfter)
}

// readJournal reads the journal at p, from where prev ended if it is
// the same epoch; continued says that the new state's records begin
// with prev's, and tail is the records that follow them.
func readJournal(p string, prev journalState) (j journalState, tail []rootRecord, continued bool, err error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return journalState{}, nil, prev.epoch == "" && len(prev.records) == 0, nil
	}
	if err != nil {
		return journalState{}, nil, false, fmt.Errorf("localfs: reading %s: %w", p, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return journalState{}, nil, false, fmt.Errorf("localfs: reading %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return journalState{}, nil, false, fmt.Errorf("localfs: %s: %w", p, errNotRegular)
	}
	id := idOf(&st)
	if id == prev.id {
		return prev, nil, true, nil
	}
	head := make([]byte, 256)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return journalState{}, nil, false, fmt.Errorf("localfs: reading %s: %w", p, err)
	}
	nl := bytes.IndexByte(head[:n], '\n')
	var h journalLine
	if nl < 0 || json.Unmarshal(head[:nl], &h) != nil || h.Kind != journalHeader || h.Epoch == "" {
		// Empty, or a header not yet (or never) written: no records.
		return journalState{id: id}, nil, prev.epoch == "" && len(prev.records) == 0, nil
	}
	j = journalState{id: id, epoch: h.Epoch, offset: int64(nl) + 1}
	if h.Epoch == prev.epoch && prev.offset >= j.offset && prev.offset <= id.size {
		j.offset, j.records, continued = prev.offset, prev.records, true
	}
	b := make([]byte, id.size-j.offset)
	if _, err := f.ReadAt(b, j.offset); err != nil && err != io.EOF {
		return journalState{}, nil, false, fmt.Errorf("localfs: reading %s: %w", p, err)
	}
	for {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			break // a torn last line, or none
		}
		var l journalLine
		if json.Unmarshal(b[:nl], &l) == nil && l.Desc != nil && l.Desc.Annotations[cache.AnnotationRefName] != "" {
			tail = append(tail, rootRecord{At: l.At, Desc: *l.Desc})
		}
		b = b[nl+1:]
		j.offset += int64(nl) + 1
	}
	j.records = append(j.records[:len(j.records):len(j.records)], tail...)
	return j, tail, continued, nil
}

// rootQueue gathers concurrent RecordRoot calls into one append and one
// fsync (group commit).
type rootQueue struct {
	mu      sync.Mutex
	pending []*rootWrite
	leading bool

	compacting  atomic.Bool
	lastCompact atomic.Int64 // unix ns of the last compaction attempted by compactSoon
}

type rootWrite struct {
	rec  rootRecord
	done chan error
}

// commitTimeout bounds a batch's wait for the index lock: the batch is
// written on behalf of callers other than the one whose context runs it.
const commitTimeout = time.Minute

// RecordRoot implements cache.RootRecorder: desc, named by its
// org.opencontainers.image.ref.name annotation, replaces any root of
// that name. It returns once the record is in the fsynced journal;
// index.json shows it after the next compaction (see the package
// documentation). Concurrent calls share one write and one fsync. If ctx
// ends first, RecordRoot returns its error, but the record may still be
// written.
func (s *Store) RecordRoot(ctx context.Context, desc v1.Descriptor) error {
	if desc.Annotations[cache.AnnotationRefName] == "" {
		return fmt.Errorf("localfs: RecordRoot: descriptor %s has no %s annotation", desc.Digest, cache.AnnotationRefName)
	}
	desc = copyDescriptor(desc)
	w := &rootWrite{rec: rootRecord{At: s.opts.now().UTC(), Desc: desc}, done: make(chan error, 1)}
	q := &s.roots
	q.mu.Lock()
	q.pending = append(q.pending, w)
	lead := !q.leading
	q.leading = true
	q.mu.Unlock()
	if lead {
		s.leadRootWrites(context.WithoutCancel(ctx))
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// leadRootWrites writes one batch of queued records, then hands the
// queue to a new goroutine if more came meanwhile, so that no caller
// waits for more than its own batch and the one before it.
func (s *Store) leadRootWrites(base context.Context) {
	q := &s.roots
	q.mu.Lock()
	batch := q.pending
	q.pending = nil
	q.mu.Unlock()
	ctx, cancel := context.WithTimeout(base, commitTimeout)
	err := s.appendRoots(ctx, batch)
	cancel()
	for _, w := range batch {
		w.done <- err
	}
	q.mu.Lock()
	more := len(q.pending) > 0
	q.leading = more
	q.mu.Unlock()
	if more {
		go s.leadRootWrites(base)
	}
}

func (s *Store) appendRoots(ctx context.Context, batch []*rootWrite) error {
	l, err := lockFile(ctx, s.indexLock, true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	if err := s.refreshLocked(ctx); err != nil {
		return err
	}
	s.view.mu.RLock()
	j := s.view.v.journal
	s.view.mu.RUnlock()

	var buf bytes.Buffer
	at := j.offset
	if j.epoch == "" {
		at = 0
		if err := writeJournalHeader(&buf); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(&buf) // one value and a newline per Encode
	for _, w := range batch {
		if err := enc.Encode(journalLine{At: w.rec.At, Desc: &w.rec.Desc}); err != nil {
			return fmt.Errorf("localfs: encoding a root: %w", err)
		}
	}
	p := s.journalPath()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o644)
	if err != nil {
		return fmt.Errorf("localfs: recording roots: %w", err)
	}
	err = f.Truncate(at) // cut a torn line a killed writer left
	if err == nil {
		_, err = f.WriteAt(buf.Bytes(), at)
	}
	if err == nil {
		err = unix.Fdatasync(int(f.Fd()))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && at == 0 {
		err = syncDir(filepath.Dir(p)) // the journal may be new
	}
	if err != nil {
		return fmt.Errorf("localfs: recording roots in %s: %w", p, noSpace(err))
	}
	if err := s.refreshLocked(ctx); err != nil {
		return nil // recorded; the next call reads it
	}
	s.view.mu.RLock()
	due := s.view.v.journal.compactionDue(s.opts.now())
	s.view.mu.RUnlock()
	if due {
		_ = s.rewriteIndexLocked(ctx, nil) // recorded already; a failed compaction is retried later
	}
	return nil
}

func writeJournalHeader(w io.Writer) error {
	var e [8]byte
	if _, err := rand.Read(e[:]); err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(journalLine{Kind: journalHeader, Epoch: hex.EncodeToString(e[:])})
}

// resetJournal starts a new, empty journal, once index.json holds the
// old one's records. The caller holds the index lock exclusively.
func (s *Store) resetJournal() error {
	var buf bytes.Buffer
	if err := writeJournalHeader(&buf); err != nil {
		return err
	}
	p := s.journalPath()
	tmp, err := writeTemp(s.tmpDir, journalName, buf.Bytes())
	if err != nil {
		return noSpace(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(p))
}

// compactSoon compacts the journal in the background of a read that
// found it due, at most once per compactAfter, so that a store only
// read from still gets its roots into index.json.
func (s *Store) compactSoon(ctx context.Context) {
	q := &s.roots
	now := time.Now().UnixNano()
	if now-q.lastCompact.Load() < int64(compactAfter) || !q.compacting.CompareAndSwap(false, true) {
		return
	}
	defer q.compacting.Store(false)
	q.lastCompact.Store(now)
	_ = s.CompactRoots(ctx)
}

// CompactRoots writes the roots recorded in the journal into index.json
// and empties the journal, so that tools reading only index.json see
// them. The store does this on its own (see RecordRoot); call it before
// handing the directory to such a tool.
func (s *Store) CompactRoots(ctx context.Context) error {
	l, err := lockFile(ctx, s.indexLock, true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	return s.rewriteIndexLocked(ctx, nil)
}
