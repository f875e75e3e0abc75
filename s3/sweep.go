package s3

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A collector deletes only within a window that it announces: before it
// reads the leases it writes buildcache/gc/<start>-<window>-<id> (start
// in Unix nanoseconds of its clock, the window in nanoseconds), it
// deletes nothing once three quarters of the window have passed since
// start (by the same clock), and it removes the marker when done. A
// holder that names new blobs in its lease writes the lease, then looks
// for markers (one LIST, usually empty), and waits while one is there,
// at most a window from when it saw it, before it looks at the blobs.
// Either a collector wrote its marker after the holder's LIST (then it
// reads the leases after the names were written, and keeps the blobs),
// or it was sweeping before, and its deletions are over when the holder
// looks. So a collector never removes a blob that a live lease named
// before its holder looked at it. No clock is compared with another for
// this: a window is measured on one clock each side. A marker left by a
// collector that died is told by the endpoint's clock (its LastModified
// more than twice its window ago) and ignored, then removed.
//
// Several collectors may start at once: each writes its marker, then
// lists the markers, and steps back (deleting its own) if it finds
// another that is not stale. A collector that runs wrote its marker
// before every later one listed, so two never delete at once; two that
// start together may both step back, and the next run collects. This
// needs no conditional write.

// DefaultGCWindow is how long a collector may delete after it read the
// leases: GCWindow's default.
const DefaultGCWindow = time.Minute

// sweepPoll is how often a holder waiting out a collector looks again.
const sweepPoll = 250 * time.Millisecond

type sweepMarker struct {
	key      string
	start    time.Time
	window   time.Duration
	modified time.Time // by the endpoint's clock
}

func parseMarker(key, prefix string) (sweepMarker, bool) {
	rest := strings.TrimPrefix(key, prefix)
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) != 3 {
		return sweepMarker{}, false
	}
	start, err1 := strconv.ParseInt(parts[0], 10, 64)
	window, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil || window <= 0 {
		return sweepMarker{}, false
	}
	return sweepMarker{key: key, start: time.Unix(0, start), window: time.Duration(window)}, true
}

// stale reports whether the marker's collector is certainly over: the
// endpoint wrote it more than twice its window ago.
func (m sweepMarker) stale(serverNow time.Time) bool {
	return serverNow.Sub(m.modified) > 2*m.window
}

// markers lists the markers of collectors that may be sweeping, and
// those left stale.
func (c *Cache) markers(ctx context.Context) (live, stale []sweepMarker, err error) {
	prefix := c.fleetKey(sweepDir, "")
	err = c.listKeys(ctx, prefix, func(key string, _ int64, modified time.Time, _ string, now time.Time) error {
		m, ok := parseMarker(key, prefix)
		if !ok {
			return nil
		}
		m.modified = modified
		if m.stale(now) {
			stale = append(stale, m)
		} else {
			live = append(live, m)
		}
		return nil
	})
	return live, stale, err
}

// waitSweepers returns once no collector that could have missed the
// caller's lease names is deleting: at once when there is no marker,
// else when the markers are gone or their window has passed since they
// were seen.
func (c *Cache) waitSweepers(ctx context.Context) error {
	live, _, err := c.markers(ctx)
	if err != nil || len(live) == 0 {
		return err
	}
	var longest time.Duration
	for _, m := range live {
		longest = max(longest, m.window)
	}
	c.sweepWaits.Add(1)
	until := c.opts.now().Add(longest)
	for c.opts.now().Before(until) {
		if err := c.sleep(ctx, sweepPoll); err != nil {
			return fmt.Errorf("s3: waiting for a collector to finish: %w", err)
		}
		if live, _, err = c.markers(ctx); err != nil {
			return err
		}
		if len(live) == 0 {
			return nil
		}
	}
	return nil
}

// sleep waits d, or less if ctx ends (tests replace it).
func (c *Cache) sleep(ctx context.Context, d time.Duration) error {
	if c.sleepHook != nil {
		return c.sleepHook(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sweep is one collector's right to delete, from beginSweep to end.
type sweep struct {
	c        *Cache
	key      string
	deadline time.Time // by this process's clock: no deletion from then on
}

// beginSweep writes this collector's marker and looks for others. It
// returns nil, and no error, when another one may be running.
func (c *Cache) beginSweep(ctx context.Context, window time.Duration) (*sweep, error) {
	start := c.opts.now()
	key := c.fleetKey(sweepDir, fmt.Sprintf("%019d-%d-%s", start.UnixNano(), int64(window), newID()))
	if _, err := c.putJSON(ctx, key, struct {
		Started time.Time `json:"started"`
	}{start}, "", false); err != nil {
		return nil, c.remoteErr("gc: announcing the collection", key, err)
	}
	s := &sweep{c: c, key: key, deadline: start.Add(window - window/4)}
	live, _, err := c.markers(ctx)
	if err != nil {
		s.end()
		return nil, err
	}
	for _, m := range live {
		if m.key != key {
			s.end()
			return nil, nil
		}
	}
	return s, nil
}

// open reports whether the collector may still delete.
func (s *sweep) open() bool { return s.c.opts.now().Before(s.deadline) }

// end removes the marker.
func (s *sweep) end() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_ = s.c.deleteKey(ctx, s.key, "") // left behind, it goes stale
}
