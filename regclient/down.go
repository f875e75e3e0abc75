package regclient

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// downFor is how long a registry that no try could reach is known to be
// down: while it is, a request makes one try instead of the retry
// policy's (and one made under WithFallback none, if the last try timed
// out), so that serving the cached copy of each image (stale-if-error)
// costs one refused connection at most, not a second of backoff or a
// timeout per image, and the first answer ends it.
const downFor = 10 * time.Second

// maxRetryAfterHold caps how long a 5xx's Retry-After keeps its registry
// known to be failing: a misconfigured "Retry-After: 86400" should not
// keep cached copies from being revalidated for a day.
const maxRetryAfterHold = 10 * time.Minute

// downHosts remembers registries that were unreachable, or that answered
// a 5xx with a Retry-After the client did not wait for.
type downHosts struct {
	now func() time.Time

	mu    sync.Mutex
	state map[string]downState // by registry ("host:port")
}

// downState is why and until when a registry is known to be failing.
type downState struct {
	until  time.Time
	status int   // the failing answer's status; 0: no answer came
	cause  error // the failure, as the request that met it saw it
}

// costly reports whether one more try would cost a caller that has a
// cached copy more than it is worth: the registry asked not to be asked
// before a time (a 5xx's Retry-After), or its last try ran into a
// timeout, so another would wait the whole fallback budget. A refused
// connection is not: one try costs a round trip, and finds at once a
// registry that is back.
func (s downState) costly() bool {
	var ne net.Error
	return s.status != 0 || (errors.As(s.cause, &ne) && ne.Timeout())
}

func newDownHosts(now func() time.Time) *downHosts {
	return &downHosts{now: now, state: map[string]downState{}}
}

func (d *downHosts) isDown(host string) (downState, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.state[host]
	if ok && !d.now().Before(s.until) {
		delete(d.state, host)
		return downState{}, false
	}
	return s, ok
}

// markDown makes host known to be failing for d (at most
// maxRetryAfterHold) from now.
func (d *downHosts) markDown(host string, dur time.Duration, status int, cause error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state[host] = downState{until: d.now().Add(min(dur, maxRetryAfterHold)), status: status, cause: cause}
}

func (d *downHosts) markUp(host string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.state, host)
}

// KnownDownError is the failure of a request that was not sent, because
// its registry is known to be failing and the caller has something else
// to serve (WithFallback): its last try timed out lately, or it answered
// a 5xx whose Retry-After has not passed. (A registry that refused
// connections lately still gets one try: it costs a round trip.) It is the Err of a *RemoteError
// whose Status is that answer's (0: unreachable), so the request counts
// as the failure it stands for; errors.As reaches the original failure
// through it.
type KnownDownError struct {
	Host  string    // the registry, "host:port"
	Until time.Time // when it is asked again
	Err   error     // the failure that made it known to be failing
}

func (e *KnownDownError) Error() string {
	return fmt.Sprintf("not asked: %s is known to be failing until %s, after: %v", e.Host, e.Until.UTC().Format(time.RFC3339), e.Err)
}

func (e *KnownDownError) Unwrap() error { return e.Err }

// KnownDown reports whether registry host ("host:port") is known to be
// failing, and until when: no try of a request could reach it (for 10
// seconds, or until it answers), or it answered a 5xx with a Retry-After
// the client did not wait for (until that has passed, at most 10
// minutes).
func (c *Client) KnownDown(host string) (until time.Time, down bool) {
	s, ok := c.down.isDown(host)
	return s.until, ok
}
