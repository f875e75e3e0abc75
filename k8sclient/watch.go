package k8sclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
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
// that fails or ends is started again after a wait; meanwhile r's TTL
// bounds staleness, as it does without a watch:
//
//   - while nothing answers at the API server's address (connection
//     refused, no route), every probe period (WithWatchProbe): a try then
//     costs a refused connection and nothing on any server, and the
//     watch is back within that period of the server's return, however
//     long it was away;
//   - after a failure the server answered (5xx, 429, a dropped stream),
//     after a backoff that doubles up to its longest wait
//     (WithWatchBackoff), so as not to add load to a struggling server;
//     any request through the Client that the server answers (a miss, a
//     write, a fresh read) ends that wait at once, but only once until a
//     watch opens (a server that answers reads but fails watches is not
//     asked once per read);
//   - after a 410 Gone, at once (r is emptied as the 410 comes), the
//     second in a row waiting as above;
//   - after a 401 or 403 (the watch's RBAC), the longest backoff, woken
//     by nothing (other requests succeeding says nothing of the watch's
//     rights); it is logged as an error and kept in Stats (WatchError)
//     until a watch opens.
func (c *Client) watch(ctx context.Context, gvr schema.GroupVersionResource, r *dynResource) {
	ri := c.dyn.Resource(gvr)
	log := c.o.logger.With("resource", r.desc)
	b := backoff{first: c.o.watchRetry, longest: c.o.watchMaxGap, wait: c.o.watchRetry}
	rv := ""          // where to resume; "" to start from now
	relisted := false // the last retry was an immediate one after a 410
	down := 0         // tries in a row that found nothing answering
	wakeable := true  // an answered request may end the next wait
	woken := false    // the last wait was ended by an answered request
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
			wakeable = true
		} else if woken {
			wakeable = false // the wake was wrong: wait the backoff out
		}
		woken = false
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
			down = 0
			b.wait = b.longest
			d := b.next()
			log.Error("k8sclient: watch refused: the client lacks list or watch on this resource type across all namespaces; the TTL alone bounds staleness", "error", err, "retry_in", d)
			if !sleep(ctx, d, nil) {
				return
			}
			continue
		}
		if unreachable(err) {
			// Nothing listens: the server is down or restarting. Probe
			// on a short period rather than back off, and start the
			// backoff from its first wait once the server answers: the
			// errors of a server starting up are no reason to wait long.
			b.reset()
			d := min(jitter(c.o.watchProbe), b.longest)
			if down == 0 {
				log.Warn("k8sclient: watch ended: the API server does not answer; trying again every probe period, the TTL bounds staleness until it is back", "error", err, "retry_in", d)
			} else {
				log.Debug("k8sclient: the API server still does not answer", "error", err, "tries", down+1, "retry_in", d)
			}
			down++
			if !sleep(ctx, d, nil) {
				return
			}
			continue
		}
		down = 0
		d := b.next()
		log.Warn("k8sclient: watch ended; the TTL bounds staleness until it is back", "error", err, "retry_in", d)
		var ok bool
		if wakeable {
			ok, woken = c.pause(ctx, d)
		} else {
			ok = sleep(ctx, d, nil)
		}
		if !ok {
			return
		}
	}
}

// pause waits d, or less if a request through the client is answered
// meanwhile (see answered), which it reports in woken; ok is false if
// ctx is done first.
func (c *Client) pause(ctx context.Context, d time.Duration) (ok, woken bool) {
	ch, done := c.up.wait()
	defer done()
	if !sleep(ctx, d, ch) {
		return false, false
	}
	select {
	case <-ch:
		return true, true
	default:
		return true, false
	}
}

// sleep waits d, or less if woken is closed; it reports false if ctx is
// done first.
func sleep(ctx context.Context, d time.Duration, woken <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-woken:
	}
	return true
}

// unreachable reports whether err says that nothing answered at the API
// server's address: a refused connection, no route to it. A timeout does
// not count: a server too busy to accept looks the same.
func unreachable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

// jitter returns d plus up to half of d, at random, so that watches that
// failed together do not all try again together.
func jitter(d time.Duration) time.Duration { return d + rand.N(d/2+1) }

// beacon is how a request the API server answered wakes the watches
// waiting out a backoff.
type beacon struct {
	waiting atomic.Int32 // watches in pause: a request pays one atomic load when none
	mu      sync.Mutex
	ch      chan struct{} // closed by signal; nil until a watch waits
}

// wait returns a channel that the next signal closes, and a function to
// call when no longer waiting.
func (b *beacon) wait() (<-chan struct{}, func()) {
	b.waiting.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch, func() { b.waiting.Add(-1) }
}

// signal wakes every watch waiting.
func (b *beacon) signal() {
	if b.waiting.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// answered is told the outcome of every request the Client makes for a
// read or a write: one the API server answered as a healthy server does
// wakes the watches waiting out a backoff, since the server is back.
func (c *Client) answered(err error) {
	if serverAnswered(err) {
		c.up.signal()
	}
}

// serverAnswered reports whether err, a request's outcome, is an answer
// of a healthy API server: a success, or a 4xx other than 429 Too Many
// Requests (a 404 for a missing object, a 409 Conflict...).
func serverAnswered(err error) bool {
	if err == nil {
		return true
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return false
	}
	code := st.Status().Code
	return code >= 400 && code < 500 && code != http.StatusTooManyRequests
}

// backoff is the watch's retry schedule: waits from first, doubling after
// each failure, each with up to 50% jitter, and never longer than longest
// (WithWatchBackoff's bounds, jitter included).
type backoff struct {
	first, longest time.Duration
	wait           time.Duration // the next wait, before jitter
}

func (b *backoff) next() time.Duration {
	d := min(jitter(b.wait), b.longest)
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
