package localfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildcache/buildcache/cache"
)

// The bytes a byte budget is checked against are counted once for every
// process using the directory, in .buildcache/usage:
//
//	committed  bytes of the blobs in blobs/sha256
//	reserved   bytes that writers in progress announced
//	scanned    when a collector last counted both from the directories
//
// Every change is made under the record's flock (and a mutex, since the
// goroutines of one process share its descriptor):
//
//   - a writer checks committed+reserved+need against the budget, and
//     only then creates its temp file, named with the bytes it reserves
//     ("-r<bytes>-"), locks it and adds them to reserved;
//   - the rename into blobs/ moves them from reserved to committed;
//   - a failed write removes its temp file and subtracts them;
//   - a removal (Delete, eviction, GC, a corrupt blob) subtracts the size.
//
// So among processes running this code, blobs plus reservations never
// pass the budget. A collector holds gc.lock exclusively, so that no blob
// is renamed into place or removed meanwhile: it counts blobs/ and, under
// the record's lock, the reservations of live temp files, and writes both
// with the time. That recount corrects what the record cannot know: what
// a killed writer had reserved (too much, which is safe) and blobs that
// other tools put into blobs/sha256 (BuildKit exporting a cache, cp, an
// older buildcache), which the budget sees only after the next recount. A
// Put with a budget recounts, by collecting first, when the record is
// missing, damaged or older than usageRescanInterval; every eviction
// recounts too, since it scans blobs/ anyway.
const (
	usageFileName       = "usage"
	usageRescanInterval = time.Minute
)

type usageRecord struct {
	committed, reserved int64
	scanned             int64 // unix ns; 0: never counted, the figures are unknown
}

// fresh reports whether the record was counted less than
// usageRescanInterval before now.
func (r usageRecord) fresh(now time.Time) bool {
	return r.scanned > 0 && now.Sub(time.Unix(0, r.scanned)) < usageRescanInterval
}

// usage is the store's handle on its usage record. If the record cannot
// be opened (a read-only or full file system), the store counts for
// itself alone in local, as it did before the record existed.
type usage struct {
	path string

	mu    sync.Mutex
	f     *os.File
	tried bool
	local usageRecord
}

// recordLen is the fixed length of the record's text, three 19-digit
// numbers, so a rewrite never needs a truncate.
const recordLen = 3 * 20

func formatRecord(r usageRecord) []byte {
	return fmt.Appendf(nil, "%019d %019d %019d\n", max(r.committed, 0), max(r.reserved, 0), r.scanned)
}

func parseRecord(b []byte) usageRecord {
	var r usageRecord
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return usageRecord{}
	}
	for i, p := range []*int64{&r.committed, &r.reserved, &r.scanned} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil || v < 0 {
			return usageRecord{}
		}
		*p = v
	}
	return r
}

// update runs fn on the record under its lock and writes it back if fn
// reports a change. fn must be brief: every budgeted writer of the
// directory waits for it.
func (u *usage) update(ctx context.Context, fn func(r *usageRecord) (changed bool, err error)) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.tried {
		u.tried = true
		if f, err := openLockFile(u.path, os.O_RDWR); err == nil {
			u.f = f
		}
	}
	if u.f == nil {
		_, err := fn(&u.local)
		return err
	}
	if err := pollFlock(ctx, u.path, ociIndexWaitFirst, fileLockWaitMax, func() error { return flockNB(u.f, u.path, true) }); err != nil {
		return err
	}
	defer unix.Flock(int(u.f.Fd()), unix.LOCK_UN)
	buf := make([]byte, recordLen)
	n, err := u.f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("localfs: reading %s: %w", u.path, err)
	}
	r := parseRecord(buf[:n])
	changed, err := fn(&r)
	if err != nil || !changed {
		return err
	}
	if _, err := u.f.WriteAt(formatRecord(r), 0); err != nil {
		// The next recount rewrites it; until then a damaged record
		// reads as unknown, which makes a budgeted Put recount first.
		return fmt.Errorf("localfs: writing %s: %w", u.path, noSpace(err))
	}
	return nil
}

// read returns the record as it is.
func (u *usage) read(ctx context.Context) (usageRecord, error) {
	var out usageRecord
	err := u.update(ctx, func(r *usageRecord) (bool, error) { out = *r; return false, nil })
	return out, err
}

// add changes committed by delta, the size of a blob removed or found.
func (u *usage) add(ctx context.Context, delta int64) {
	_ = u.update(ctx, func(r *usageRecord) (bool, error) {
		r.committed = max(r.committed+delta, 0)
		return true, nil
	}) // best effort: a lost update is corrected by the next recount
}

// recount sets the record from a count of blobs/ taken under the
// exclusive gc.lock and from the live reservations in the temp
// directory, listed under the record's lock so that none is missed or
// counted twice. It returns the reservations.
func (s *Store) recount(ctx context.Context, committed int64) (int64, error) {
	var reserved int64
	err := s.usage.update(ctx, func(r *usageRecord) (bool, error) {
		reserved = s.liveReservations()
		*r = usageRecord{committed: committed, reserved: reserved, scanned: time.Now().UnixNano()}
		return true, nil
	})
	return reserved, err
}

// reservationTag is how a blob's temp file names the bytes its writer
// reserved: "<hex prefix>-r<bytes>-<random>.tmp".
const reservationTag = "-r"

func reservedIn(name string) int64 {
	i := strings.Index(name, reservationTag)
	if i < 0 {
		return 0
	}
	rest := name[i+len(reservationTag):]
	j := strings.IndexByte(rest, '-')
	if j < 0 {
		return 0
	}
	n, err := strconv.ParseInt(rest[:j], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// liveReservations sums what the temp files of live writers reserved; a
// temp file nobody holds locked is a dead writer's and reserves nothing.
func (s *Store) liveReservations() int64 {
	dir, err := openDirNoFollow(s.root, privateDir, tmpDirName)
	if err != nil {
		return 0
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1) // a few: one per write in progress
	if err != nil {
		return 0
	}
	var total int64
	for _, name := range names {
		n := reservedIn(name)
		if n == 0 || !strings.HasSuffix(name, tmpSuffix) {
			continue
		}
		fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) != nil {
			total += n // locked: its writer lives
		}
		unix.Close(fd)
	}
	return total
}

// errBudgetBusy says that other writers kept taking the room evictions made.
var errBudgetBusy = errors.New("other writers keep filling the budget")

// maxReserveAttempts bounds how often a writer evicts and tries again
// because other writers took the room an eviction made.
const maxReserveAttempts = 5

// createTemp makes the locked temp file a blob of need bytes (0 if
// unknown) is written to, once need fits the byte budget, evicting first
// if it does not. The bytes are reserved until commitTemp or dropTemp.
func (s *Store) createTemp(ctx context.Context, prefix string, need int64) (*os.File, error) {
	for attempt := 1; ; attempt++ {
		var f *os.File
		fits := true
		err := s.usage.update(ctx, func(r *usageRecord) (bool, error) {
			if s.opts.maxBytes > 0 && (!r.fresh(time.Now()) || r.committed+r.reserved+need > s.opts.maxBytes) {
				fits = false
				return false, nil
			}
			var err error
			f, err = os.CreateTemp(s.tmpDir, prefix+reservationTag+strconv.FormatInt(need, 10)+"-*"+tmpSuffix)
			if err != nil {
				return false, noSpace(err)
			}
			if err := lockExclusive(f); err != nil {
				os.Remove(f.Name())
				f.Close()
				return false, fmt.Errorf("locking temp file: %w", err)
			}
			r.reserved += need
			return true, nil
		})
		if err != nil || fits {
			return f, err
		}
		if attempt == maxReserveAttempts {
			return nil, fmt.Errorf("%d bytes do not fit the budget of %d: %w: %w", need, s.opts.maxBytes, errBudgetBusy, cache.ErrNoSpace)
		}
		if _, err := s.evict(ctx, need, 0); err != nil {
			return nil, err
		}
	}
}

// growReservation reserves n bytes in all for the temp file at tmp, which
// reserved had, when a blob of unknown size turns out to be larger: the
// file is renamed to name its new reservation in the same critical
// section. It returns the new name.
func (s *Store) growReservation(ctx context.Context, tmp string, had, n int64) (string, error) {
	for attempt := 1; ; attempt++ {
		renamed := tmp
		fits := true
		err := s.usage.update(ctx, func(r *usageRecord) (bool, error) {
			if s.opts.maxBytes > 0 && (!r.fresh(time.Now()) || r.committed+r.reserved-had+n > s.opts.maxBytes) {
				fits = false
				return false, nil
			}
			base := filepath.Base(tmp)
			i := strings.Index(base, reservationTag)
			j := i + len(reservationTag) + strings.IndexByte(base[i+len(reservationTag):], '-')
			renamed = filepath.Join(filepath.Dir(tmp), base[:i]+reservationTag+strconv.FormatInt(n, 10)+base[j:])
			if err := os.Rename(tmp, renamed); err != nil {
				return false, noSpace(err)
			}
			r.reserved += n - had
			return true, nil
		})
		if err != nil || fits {
			return renamed, err
		}
		if attempt == maxReserveAttempts {
			return "", fmt.Errorf("%d bytes do not fit the budget of %d: %w: %w", n, s.opts.maxBytes, errBudgetBusy, cache.ErrNoSpace)
		}
		if _, err := s.evict(ctx, n-had, 0); err != nil {
			return "", err
		}
	}
}

// dropTemp removes a temp file that will not be committed and returns
// its reservation, in one critical section so a recount sees one or the
// other. It runs after a failure or cancellation, so it waits on a
// context of its own, bounded.
func (s *Store) dropTemp(ctx context.Context, f *os.File, tmp string, reserved int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	err := s.usage.update(ctx, func(r *usageRecord) (bool, error) {
		os.Remove(tmp) // before Close, so no sweep sees it unlocked
		r.reserved = max(r.reserved-reserved, 0)
		return true, nil
	})
	if err != nil {
		os.Remove(tmp) // the reservation stays until the next recount
	}
	f.Close()
}
