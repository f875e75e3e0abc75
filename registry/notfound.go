package registry

// Remembered 404s (WithNotFoundTTL): a reference the registry does not
// know is not asked for again for a while, so a client retrying a missing
// tag costs the registry one request per TTL, not two per pull.

import (
	"container/list"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/buildcache/buildcache/regclient"
)

// maxNotFound bounds the references remembered as missing: when full,
// the oldest is dropped, which costs one request when it is asked again.
const maxNotFound = 4096

// notFoundCache remembers 404s by reference name for a TTL. Every entry
// lives as long, so the oldest is also the first to expire: a list in
// the order they were answered serves for expiry and eviction alike.
type notFoundCache struct {
	ttl time.Duration // 0: nothing is remembered
	now func() time.Time

	mu    sync.Mutex
	byRef map[string]*list.Element // of *notFound
	order list.List                // oldest first
}

type notFound struct {
	ref string
	at  time.Time
	err error // the registry's answer, a *regclient.RemoteError with Status 404
}

func newNotFoundCache(ttl time.Duration, now func() time.Time) *notFoundCache {
	return &notFoundCache{ttl: ttl, now: now, byRef: map[string]*list.Element{}}
}

// get returns ref's remembered 404, if it has not expired.
func (c *notFoundCache) get(ref string) (notFound, bool) {
	if c.ttl <= 0 {
		return notFound{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire()
	if e, ok := c.byRef[ref]; ok {
		return *e.Value.(*notFound), true
	}
	return notFound{}, false
}

// note remembers err for ref if it is the registry's 404, and forgets ref
// if err is nil (the registry has it now).
func (c *notFoundCache) note(ref string, err error) {
	var re *regclient.RemoteError
	switch {
	case c.ttl <= 0:
		return
	case err == nil:
		c.mu.Lock()
		c.remove(ref)
		c.mu.Unlock()
		return
	case !errors.As(err, &re) || re.Status != http.StatusNotFound:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(ref)
	c.expire()
	for c.order.Len() >= maxNotFound {
		c.remove(c.order.Front().Value.(*notFound).ref)
	}
	c.byRef[ref] = c.order.PushBack(&notFound{ref: ref, at: c.now(), err: err})
}

func (c *notFoundCache) remove(ref string) {
	if e, ok := c.byRef[ref]; ok {
		c.order.Remove(e)
		delete(c.byRef, ref)
	}
}

// expire drops the entries older than the TTL, all at the front.
func (c *notFoundCache) expire() {
	now := c.now()
	for e := c.order.Front(); e != nil; e = c.order.Front() {
		nf := e.Value.(*notFound)
		if now.Sub(nf.at) < c.ttl {
			return
		}
		c.remove(nf.ref)
	}
}

// len is how many references are remembered, expired ones included.
func (c *notFoundCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// rememberedNotFound is the error of refName's remembered 404, or nil:
// the registry's own answer, with how long ago it was given.
func (r *Resolver) rememberedNotFound(refName string) error {
	nf, ok := r.notFound.get(refName)
	if !ok {
		return nil
	}
	r.stats.notFoundRemembered.Add(1)
	age := r.o.now().Sub(nf.at)
	return fmt.Errorf("%w (remembered: answered %s ago, asked again in %s)", nf.err, age.Round(time.Second), (r.notFound.ttl - age).Round(time.Second))
}
