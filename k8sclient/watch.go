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
// bounds staleness, as it does without a watch.
func (c *Client) watch(ctx context.Context, gvr schema.GroupVersionResource, r *dynResource) {
	ri := c.dyn.Resource(gvr)
	log := c.o.logger.With("resource", r.desc)
	wait := c.o.watchRetry
	rv := "" // where to resume; "" to start from now
	for {
		opened, err := c.watchOnce(ctx, ri, r, &rv)
		r.watching.Store(false)
		if ctx.Err() != nil {
			return
		}
		r.watchRestarts.Add(1)
		// A watch that stayed open a while resets the backoff: this is a
		// routine end (the server's watch timeout), not a failing server.
		if !opened.IsZero() && time.Since(opened) >= 10*c.o.watchRetry {
			wait = c.o.watchRetry
		}
		d := wait + rand.N(wait/2+1)
		log.Warn("k8sclient: watch ended; the TTL bounds staleness until it is back", "error", err, "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, c.o.watchMaxGap)
	}
}

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
			*rv = ""
		}
		return time.Time{}, fmt.Errorf("watch: %w", err)
	}
	defer w.Stop()
	opened := time.Now()
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
				*rv = "" // events were lost: start again from now
			}
			return opened, fmt.Errorf("watch: %w", err)
		}
	}
}

func isGone(err error) bool {
	return apierrors.IsGone(err) || apierrors.IsResourceExpired(err)
}
