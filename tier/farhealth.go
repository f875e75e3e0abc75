package tier

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/netfail"
)

// farDownFor is how long the tier leaves a far tier that could not be
// reached alone: its calls are skipped (reads go to the near tier only,
// far writes are dropped and counted in Stats.FarSkipped), then one
// probe in the background asks it again.
const farDownFor = 10 * time.Second

// probeTimeout guards a probe against a far tier that bounds nothing
// itself: no caller waits for a probe, but Close does.
const probeTimeout = time.Minute

// farHealth is what the tier knows of its far tier; Cache.mu guards it.
type farHealth struct {
	downUntil   time.Time // the far tier was unreachable: skip it until then; zero: not known down
	probing     bool      // a probe is under way
	failing     bool      // a warning was logged; a far call that succeeds ends it
	skippedFrom uint64    // FarSkipped when the failure began
}

// farUsable reports whether a far call about d may be made now. While the
// far tier is known down it may not: the call is counted as skipped, and
// once the down period is over one probe (a Stat of d) runs in the
// background, so that no caller waits on a far tier that is down. A zero
// d starts no probe.
func (c *Cache) farUsable(d v1.Hash) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.health.downUntil.IsZero() {
		return true
	}
	c.farSkipped.Add(1)
	if !c.health.probing && d.Hex != "" && !c.o.now().Before(c.health.downUntil) {
		c.health.probing = true
		c.probes.Add(1)
		go c.probe(d)
	}
	return false
}

func (c *Cache) probe(d v1.Hash) {
	defer c.probes.Done()
	ctx, cancel := context.WithTimeout(c.bg, probeTimeout)
	defer cancel()
	_, err := c.far.Stat(ctx, d)
	c.mu.Lock()
	c.health.probing = false
	c.mu.Unlock()
	c.farDone(ctx, err)
}

// farDone records how a far call ended. It reports whether err was a far
// failure that the cache absorbs: not a plain miss, a bad digest or the
// caller's own cancellation. Any answer ends a known outage; a call that
// reached nothing (cache.ErrOffline, or a network error) starts one. The
// first failure after a success is logged as a warning, and the first
// success after it as the far tier answering again.
func (c *Cache) farDone(ctx context.Context, err error) bool {
	switch {
	case err != nil && ctx.Err() != nil, errors.Is(err, cache.ErrInvalidDigest):
		return false
	case err == nil, errors.Is(err, cache.ErrNotFound):
		c.mu.Lock()
		c.health.downUntil = time.Time{}
		recovered := err == nil && c.health.failing
		if recovered {
			c.health.failing = false
		}
		skipped := c.farSkipped.Load() - c.health.skippedFrom
		c.mu.Unlock()
		if recovered {
			c.o.logger.Info("tier: the far tier answers again", "far_calls_skipped", skipped)
		}
		return false
	}
	c.farErrors.Add(1)
	c.stats.Errors.Add(1)
	down := errors.Is(err, cache.ErrOffline) || netfail.Unreachable(err)
	c.mu.Lock()
	c.lastErr = err
	if down {
		c.health.downUntil = c.o.now().Add(farDownFor)
	}
	warn := !c.health.failing
	if warn {
		c.health.failing = true
		c.health.skippedFrom = c.farSkipped.Load()
	}
	c.mu.Unlock()
	switch {
	case warn && down:
		c.o.logger.Warn("tier: the far tier is unreachable; reading from the near tier only and skipping far writes, asking it again every "+farDownFor.String(), "error", err.Error())
	case warn:
		c.o.logger.Warn("tier: the far tier fails; the near tier goes on", "error", err.Error())
	}
	return true
}

// skipped is the error of a far call skipped while the far tier is known
// down, with the failure that put it down.
func (c *Cache) skipped(d v1.Hash, also error) error {
	c.mu.Lock()
	last := c.lastErr
	c.mu.Unlock()
	return fmt.Errorf("tier: %s: %w (far tier down, not asked: %v)", d, also, last)
}
