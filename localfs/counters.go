package localfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
)

// The store's lifetime counters, summed over every process that has used
// the directory, are kept in .buildcache/counters:
//
//	buildcache-counters 1
//	since <unix ns>
//	reset <quoted reason>          only if a damaged file was restarted
//	store.hits <n>                 one line per counter, names sorted
//	resolver.pulled <n>            ... and those added with AddCounters
//	crc32 <8 hex digits>           of every byte above
//
// A Store does not write it on every operation: it keeps what it has
// counted since its last flush in memory and adds that to the file at most
// every countersFlushInterval (a background flusher), on FlushCounters
// and on Close. A flush takes counters.lock exclusively, reads the file,
// adds the deltas and replaces the file by a synced temp file and a
// rename, so several processes never lose each other's additions and a
// reader sees the old or the new file, never half. A crash loses at most
// what the process counted since its last flush (a few seconds). A file
// that does not parse or whose checksum does not match (written by
// something else, or damaged on disk) reads as empty, with the reason in
// Lifetime.Reset, and the next flush rewrites it from zero.
const (
	countersFileName      = "counters"
	countersLockName      = "counters.lock"
	countersHeader        = "buildcache-counters 1"
	countersFlushInterval = 5 * time.Second
	countersMaxBytes      = 1 << 20 // a damaged file is not read whole
	storeCounterPrefix    = "store."
)

// Lifetime is what every process that used a store's directory counted,
// since Since: the persisted counters plus what this Store has counted
// and not yet flushed.
type Lifetime struct {
	// Stats are the store's own counters (those Stats reports per
	// process).
	Stats cache.Stats
	// Counters are the counters added with AddCounters, by name: a
	// registry.Resolver adds its pulls and revalidations there. The map
	// is the caller's.
	Counters map[string]uint64
	// Since is when counting began: the first flush into the directory,
	// or the restart of a damaged file. Zero if nothing was flushed yet.
	Since time.Time
	// Reset, if not empty, says why the counters were last restarted from
	// zero: the file was found damaged.
	Reset string
	// Damaged reports that the file is damaged now: it read as empty (Reset
	// says why) and the next flush rewrites it.
	Damaged bool
}

// counterName is what AddCounters accepts as a name: short, lower case,
// dots and underscores, so that it fits the file's "name value" lines.
var counterName = regexp.MustCompile(`^[a-z][a-z0-9_.]{0,63}$`)

// storeCounterNames are the file's names for the fields of cache.Stats.
var storeCounterNames = []string{"hits", "misses", "bytes_in", "bytes_out", "evictions", "corruptions", "errors"}

func statsFields(s *cache.Stats) []*uint64 {
	return []*uint64{&s.Hits, &s.Misses, &s.BytesIn, &s.BytesOut, &s.Evictions, &s.Corruptions, &s.Errors}
}

// countersRecord is the file's content.
type countersRecord struct {
	since  int64 // unix ns
	reset  string
	values map[string]uint64
}

func formatCounters(r countersRecord) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nsince %d\n", countersHeader, r.since)
	if r.reset != "" {
		fmt.Fprintf(&b, "reset %s\n", strconv.Quote(r.reset))
	}
	for _, name := range slices.Sorted(maps.Keys(r.values)) {
		fmt.Fprintf(&b, "%s %d\n", name, r.values[name])
	}
	fmt.Fprintf(&b, "crc32 %08x\n", crc32.ChecksumIEEE(b.Bytes()))
	return b.Bytes()
}

// parseCounters parses the file, or says why it is damaged.
func parseCounters(b []byte) (countersRecord, error) {
	r := countersRecord{values: map[string]uint64{}}
	body, sum, ok := cutLastLine(b)
	if !ok {
		return r, errors.New("no checksum line")
	}
	want, err := strconv.ParseUint(string(bytes.TrimPrefix(sum, []byte("crc32 "))), 16, 32)
	if !bytes.HasPrefix(sum, []byte("crc32 ")) || err != nil || uint32(want) != crc32.ChecksumIEEE(body) {
		return r, errors.New("checksum does not match")
	}
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	if len(lines) < 2 || string(lines[0]) != countersHeader {
		return r, fmt.Errorf("not a counters file (want %q first)", countersHeader)
	}
	since, ok := bytes.CutPrefix(lines[1], []byte("since "))
	if r.since, err = strconv.ParseInt(string(since), 10, 64); !ok || err != nil {
		return r, fmt.Errorf("bad line %q", lines[1])
	}
	for _, line := range lines[2:] {
		name, value, ok := bytes.Cut(line, []byte(" "))
		if ok && string(name) == "reset" {
			if r.reset, err = strconv.Unquote(string(value)); err != nil {
				return r, fmt.Errorf("bad line %q", line)
			}
			continue
		}
		n, err := strconv.ParseUint(string(value), 10, 64)
		if !ok || err != nil || !counterName.Match(name) {
			return r, fmt.Errorf("bad line %q", line)
		}
		r.values[string(name)] = n
	}
	return r, nil
}

// cutLastLine splits b, which must end in a newline, before its last line.
func cutLastLine(b []byte) (body, last []byte, ok bool) {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, nil, false
	}
	i := bytes.LastIndexByte(b[:len(b)-1], '\n')
	if i < 0 {
		return nil, nil, false
	}
	return b[:i+1], b[i+1 : len(b)-1], true
}

// counterFile is a Store's handle on the counters file and what it has
// counted since its last flush. It holds no reference to the Store, so
// that an abandoned Store can be collected (and its counters flushed by
// the cleanup that stops the flusher).
type counterFile struct {
	path, lock, tmpDir string
	live               *cache.Counters // the Store's

	mu      sync.Mutex
	flushed cache.Stats       // live as of the last flush
	pending map[string]uint64 // AddCounters since the last flush
	damaged string            // why the file last read was unusable: rewrite it
	off     bool              // the file cannot be written (read-only store)

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newCounterFile(root, tmpDir string, live *cache.Counters) *counterFile {
	return &counterFile{
		path:    filepath.Join(root, privateDir, countersFileName),
		lock:    filepath.Join(root, privateDir, countersLockName),
		tmpDir:  tmpDir,
		live:    live,
		pending: map[string]uint64{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// startFlusher flushes c every interval until close; if owner becomes
// unreachable without being closed, the flusher is stopped by a cleanup.
func (c *counterFile) startFlusher(owner *Store, interval time.Duration) {
	go func() {
		defer close(c.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				_ = c.flush(context.Background()) // kept in memory and retried on failure
			}
		}
	}()
	// No last flush here: a cleanup runs at any time, even while the
	// directory is being removed; an abandoned Store loses what it counted
	// since its last flush, as a crash would.
	runtime.AddCleanup(owner, func(c *counterFile) { c.stopFlusher() }, c)
}

func (c *counterFile) stopFlusher() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}

// close stops the flusher and flushes what is left.
func (c *counterFile) close() error {
	c.stopFlusher()
	return c.flush(context.Background())
}

func (c *counterFile) add(counters map[string]uint64) error {
	for name := range counters {
		if !counterName.MatchString(name) || strings.HasPrefix(name, storeCounterPrefix) {
			return fmt.Errorf("localfs: AddCounters: invalid counter name %q (want [a-z][a-z0-9_.]*, not store.*)", name)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, n := range counters {
		c.pending[name] += n
	}
	return nil
}

// read returns the file's record, or an empty one and why it is unusable.
// A missing file is empty and fine.
func (c *counterFile) read() (countersRecord, string) {
	f, _, err := openRegular(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return countersRecord{values: map[string]uint64{}}, ""
	}
	var b []byte
	if err == nil {
		b, err = io.ReadAll(io.LimitReader(f, countersMaxBytes+1))
		f.Close()
		if err == nil && len(b) > countersMaxBytes {
			err = errors.New("too large")
		}
	}
	if err != nil {
		return countersRecord{values: map[string]uint64{}}, fmt.Sprintf("%s unreadable: %v", c.path, err)
	}
	r, err := parseCounters(b)
	if err != nil {
		return countersRecord{values: map[string]uint64{}}, fmt.Sprintf("%s damaged (%v): counting restarted from zero", c.path, err)
	}
	return r, ""
}

// deltaLocked is what this Store counted since its last flush, by the
// file's names, and the snapshot it was taken from.
func (c *counterFile) deltaLocked() (map[string]uint64, cache.Stats) {
	now := c.live.Snapshot()
	delta := maps.Clone(c.pending)
	cur, was := statsFields(&now), statsFields(&c.flushed)
	for i, name := range storeCounterNames {
		if d := *cur[i] - *was[i]; d != 0 {
			delta[storeCounterPrefix+name] = d
		}
	}
	return delta, now
}

// flush adds what this Store counted since its last flush to the file.
func (c *counterFile) flush(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delta, now := c.deltaLocked()
	if c.off || (len(delta) == 0 && c.damaged == "") {
		return nil
	}
	l, err := lockFile(ctx, c.lock, true)
	if err != nil {
		return c.failed(err)
	}
	defer l.Unlock()
	r, damaged := c.read() // again: another process may have rewritten it meanwhile
	if damaged != "" {
		r = countersRecord{reset: damaged, values: map[string]uint64{}}
	}
	if r.since == 0 {
		r.since = time.Now().UnixNano()
	}
	for name, n := range delta {
		r.values[name] += n
	}
	tmp, err := writeTemp(c.tmpDir, countersFileName, formatCounters(r))
	if err != nil {
		return c.failed(err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		os.Remove(tmp)
		return c.failed(err)
	}
	c.flushed, c.pending, c.damaged = now, map[string]uint64{}, ""
	return nil
}

// failed keeps the deltas for the next flush, unless the directory cannot
// be written at all: then the counters stay this process's.
func (c *counterFile) failed(err error) error {
	if errors.Is(err, unix.EROFS) || errors.Is(err, fs.ErrPermission) {
		c.off = true
	}
	return fmt.Errorf("localfs: flushing counters to %s: %w", c.path, noSpace(err))
}

// lifetime is the file's counters plus what was not flushed yet.
func (c *counterFile) lifetime() Lifetime {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, damaged := c.read()
	if damaged != "" {
		c.damaged = damaged // the next flush (Close's, at the latest) rewrites it
	}
	delta, _ := c.deltaLocked()
	for name, n := range delta {
		r.values[name] += n
	}
	out := Lifetime{Counters: map[string]uint64{}, Reset: r.reset}
	if damaged != "" {
		out.Reset, out.Damaged = damaged, true
	}
	if r.since != 0 {
		out.Since = time.Unix(0, r.since)
	}
	fields := statsFields(&out.Stats)
	for name, n := range r.values {
		if field, ok := strings.CutPrefix(name, storeCounterPrefix); ok {
			if i := slices.Index(storeCounterNames, field); i >= 0 {
				*fields[i] = n
			}
			continue // a store counter of a later version: not ours to show
		}
		out.Counters[name] = n
	}
	return out
}

// AddCounters adds to named counters that the store keeps with its own,
// across processes (see Lifetime). A registry.Resolver whose store offers
// it adds its pulls and revalidations. Names are lower case letters,
// digits, dots and underscores; "store." is the store's own.
func (s *Store) AddCounters(counters map[string]uint64) error {
	return s.counters.add(counters)
}

// Lifetime returns the counters of every process that used the directory
// (including what this Store has not flushed yet). A damaged counters
// file reads as empty, with the reason in Lifetime.Reset, not as an error.
func (s *Store) Lifetime(ctx context.Context) (Lifetime, error) {
	if err := ctx.Err(); err != nil {
		return Lifetime{}, err
	}
	return s.counters.lifetime(), nil
}

// LifetimeStats is Lifetime(ctx).Stats: what Stats reports, summed over
// every process that used the directory.
func (s *Store) LifetimeStats(ctx context.Context) (cache.Stats, error) {
	l, err := s.Lifetime(ctx)
	return l.Stats, err
}

// FlushCounters adds what this Store counted since its last flush to the
// counters file now, rather than at the next background flush.
func (s *Store) FlushCounters(ctx context.Context) error {
	return s.counters.flush(ctx)
}

// Close abandons the writes in progress, flushes the counters and stops
// their background flusher. A Put or PutDeferred in progress fails with
// ErrClosed, and its temp file is removed before Close returns, whatever
// its source is doing; later ones fail with ErrClosed at once. The rest
// of the store stays usable (its counts are then flushed only by
// FlushCounters). A Store that is never closed is flushed every few
// seconds until it is garbage collected, and loses what it counted since
// its last flush.
func (s *Store) Close() error {
	s.closeWrites()
	return s.counters.close()
}
