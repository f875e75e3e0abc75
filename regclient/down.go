package regclient

import (
	"sync"
	"time"
)

// downFor is how long a registry that no try could reach is known to be
// down: while it is, a request makes one try instead of the retry
// policy's, so that serving the cached copy of each image (stale-if-error)
// costs one refused connection, not a second of backoff per image, and
// the first answer ends it.
const downFor = 10 * time.Second

// downHosts remembers registries that were unreachable.
type downHosts struct {
	now func() time.Time

	mu    sync.Mutex
	until map[string]time.Time // registry ("host:port") → known down until
}

func newDownHosts(now func() time.Time) *downHosts {
	return &downHosts{now: now, until: map[string]time.Time{}}
}

func (d *downHosts) isDown(host string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	until, ok := d.until[host]
	if ok && !d.now().Before(until) {
		delete(d.until, host)
		return false
	}
	return ok
}

func (d *downHosts) markDown(host string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.until[host] = d.now().Add(downFor)
}

func (d *downHosts) markUp(host string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.until, host)
}
