package k8sclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

// errWatchClosed is why a watch the server ended cleanly is restarted.
var errWatchClosed = errors.New("the server closed the watch")

// watch keeps one watch of gvr open until ctx is done, dropping from r
// every object it sees change (and the Lists that could hold it). A watch
// that fails or ends is started again after a backoff; meanwhile r's TTL
// bounds staleness, as it does without a watch. A 410 Gone empties r at
// once and starts again from now without waiting; a 401 or 403 (the
// watch's RBAC) waits the longest backoff between tries, and is logged as
// an error and kept in Stats (WatchError) until a watch opens.
func (c *Client) watch(ctx context.Context, gvr schema.GroupVersionResource, r *dynResource) {
	ri := c.dyn.Resource(gvr)
	log := c.o.logger.With("resource", r.desc)
	b := backoff{first: c.o.watchRetry, longest: c.o.watchMaxGap, wait: c.o.watchRetry}
	rv := ""          // where to resume; "" to start from now
	relisted := false // the last retry was an immediate one after a 410
	for {
		opened, err := c.watchOnce(ctx, ri, r, &rv)
		r.watching.Store(false)
		if ctx.Err() != nil {
			return
		}
		r.watchErr.Store(&watchError{err})
		r.watchRestarts.Add(1)
		if !opened.IsZero() {
			b.reset() // the server is back: the next failure is a new one
		}
		if isGone(err) && !relisted {
			// watchOnce has emptied r already: what changed since rv is
			// unknown. Relist now; waiting would only serve stale objects
			// for longer. Twice in a row, though, is waited out.
			relisted = true
			log.Info("k8sclient: watch expired (410 Gone); emptied the cache and watching again from now", "error", err)
			continue
		}
		relisted = false
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			// Retrying fast will not grant the missing RBAC; trying now and
			// then notices when someone does.
			b.wait = b.longest
			d := b.next()
			log.Error("k8sclient: watch refused: the client lacks list or watch on this resource type across all namespaces; the TTL alone bounds staleness", "error", err, "retry_in", d)
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		d := b.next()
		log.Warn("k8sclient: watch ended; the TTL bounds staleness until it is back", "error", err, "retry_in", d)
		if !sleep(ctx, d) {
			return
		}
	}
}

// sleep waits d, or less if ctx is done first; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff is the watch's retry schedule: waits from first, doubling after
// each failure, each with up to 50% jitter, and never longer than longest
// (WithWatchBackoff's bounds, jitter included).
type backoff struct {
	first, longest time.Duration
	wait           time.Duration // the next wait, before jitter
}

func (b *backoff) next() time.Duration {
	d := min(b.wait+rand.N(b.wait/2+1), b.longest)
	b.wait = min(2*b.wait, b.longest)
	return d
}

func (b *backoff) reset() { b.wait = b.first }

// watchError is what resource.watchErr holds: why the watch is down.
type watchError struct{ err error }

// watchOnce runs one watch to its end, resuming from *rv, or from a fresh
// resourceVersion if *rv is "" (emptying r first: what changed while
// nobody watched is unknown). It reports when the watch was opened (zero
// if it was not) and why it ended.
func (c *Client) watchOnce(ctx context.Context, ri dynamic.NamespaceableResourceInterface, r *dynResource, rv *string) (time.Time, error) {
	if *rv == "" {
		// A one-item List gives the collection's current resourceVersion
		// without sending the collection (a watch from "" or "0" would
		// start by sending every object).
		l, err := ri.List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			return time.Time{}, fmt.Errorf("list for a resourceVersion to watch from: %w", err)
		}
		r.purge()
		*rv = l.GetResourceVersion()
	}
	w, err := ri.Watch(ctx, metav1.ListOptions{ResourceVersion: *rv, AllowWatchBookmarks: true})
	if err != nil {
		if isGone(err) {
			r.purge() // events were lost: nothing cached can be trusted
			*rv = ""
		}
		return time.Time{}, fmt.Errorf("watch: %w", err)
	}
	defer w.Stop()
	opened := time.Now()
	r.watchErr.Store(nil)
	r.watching.Store(true)
	for {
		var ev watch.Event
		var ok bool
		select {
		case <-ctx.Done():
			return opened, ctx.Err()
		case ev, ok = <-w.ResultChan():
		}
		if !ok {
			return opened, errWatchClosed
		}
		switch ev.Type {
		case watch.Added, watch.Modified, watch.Deleted:
			obj, err := meta.Accessor(ev.Object)
			if err != nil {
				r.purge() // cannot tell what changed: drop everything
				continue
			}
			r.watchEvents.Add(1)
			r.invalidate(obj.GetNamespace(), obj.GetName())
			*rv = obj.GetResourceVersion()
		case watch.Bookmark:
			if obj, err := meta.Accessor(ev.Object); err == nil {
				*rv = obj.GetResourceVersion()
			}
		case watch.Error:
			err := apierrors.FromObject(ev.Object)
			if isGone(err) {
				r.purge() // events were lost: start again from now
				*rv = ""
			}
			return opened, fmt.Errorf("watch: %w", err)
		}
	}
}

func isGone(err error) bool {
	return apierrors.IsGone(err) || apierrors.IsResourceExpired(err)
}
