package k8sclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/memory"
)

// resource is the cache of one resource type, shared by Client (one per
// GroupVersionResource, holding unstructured objects) and Typed (holding
// T and L): objects by namespace and name, and Lists by namespace and
// selectors, in one memory.Cache with the type's TTL.
//
// # No stale write-back
//
// memory.Cache orders Invalidate with loads: a load that started before an
// Invalidate of its key neither stores its result nor is joined by later
// Gets. That covers objects. A List, though, can be made stale by a change
// to any object of its namespace, and memory.Cache cannot enumerate or
// invalidate keys by prefix; so each namespace has a list generation,
// which is part of every List key and which every invalidation in the
// namespace (and of all-namespace Lists, for every namespace) increments.
// A List that started before the increment stores under the old
// generation, which no later read asks for; the orphan entry is evicted
// by its TTL or by the cost bound. Every fetch the cache makes is a quorum
// read (no resourceVersion), so a fetch that starts after an invalidation
// sees the change that caused it, or a newer state.
type resource[T, L any] struct {
	desc  string // for messages: "jobs.v1.batch"
	cache *memory.Cache[key, entry[T, L]]
	be    backend[T, L]

	mu   sync.Mutex
	gens map[string]uint64 // list generation by namespace ("" for all-namespace Lists)

	requests      atomic.Uint64
	fresh         atomic.Uint64
	uncached      atomic.Uint64
	writes        atomic.Uint64
	invalidations atomic.Uint64
	watchEvents   atomic.Uint64
	watchRestarts atomic.Uint64
	watching      atomic.Bool
	watchErr      atomic.Pointer[watchError] // nil while watching or never watched
}

// key identifies an entry of a resource's cache: an object by namespace
// and name, or a List by namespace, canonical selectors and generation.
// It is hashed by key.hash.
type key struct {
	ns   string
	name string // a List's: its label selector, "\x00", its field selector
	gen  uint64 // a List's generation
	list bool
}

func listName(labels, fields string) string { return labels + "\x00" + fields }

// String is how a key appears in memory.Cache's errors.
func (k key) String() string {
	if !k.list {
		if k.ns == "" {
			return k.name
		}
		return k.ns + "/" + k.name
	}
	ns := k.ns
	if ns == "" {
		ns = "(all namespaces)"
	}
	labels, fields, _ := strings.Cut(k.name, "\x00")
	return fmt.Sprintf("list %s labelSelector=%q fieldSelector=%q", ns, labels, fields)
}

// entry is a cached object or List, with its estimated size.
type entry[T, L any] struct {
	obj  T
	list L
	cost int64
}

// backend is how a resource fetches from the API server and handles what
// it fetched.
type backend[T, L any] struct {
	get      func(ctx context.Context, ns, name string) (T, error)
	list     func(ctx context.Context, ns string, opts metav1.ListOptions) (L, error)
	copyObj  func(T) T
	copyList func(L) L
	prepObj  func(T) int64 // transforms in place, returns the estimated size
	prepList func(L) int64
	answered func(error) // if not nil, told the outcome of every request
}

func newResource[T, L any](desc string, o *options, ttl, neg time.Duration, be backend[T, L]) (*resource[T, L], error) {
	seed := rand.Uint64() // unpredictable: names cannot be chosen to collide
	mopts := []memory.Option{
		memory.WithHash(func(k key) uint64 { return k.hash(seed) }),
		memory.WithTTL(ttl),
		memory.WithMaxCost(o.maxCost),
		memory.WithCost(func(e entry[T, L]) int64 { return e.cost }),
	}
	if neg > 0 {
		mopts = append(mopts, memory.WithNegativeTTL(neg, isObjectNotFound))
	}
	if o.now != nil {
		mopts = append(mopts, memory.WithClock(o.now))
	}
	c, err := memory.New[key, entry[T, L]](mopts...)
	if err != nil {
		return nil, fmt.Errorf("k8sclient: %s: %w", desc, err)
	}
	return &resource[T, L]{desc: desc, cache: c, be: be, gens: make(map[string]uint64)}, nil
}

// ErrUnknownResource is in the chain of the error a read returns when the
// API server answers 404 for the endpoint rather than for the object: the
// resource type is not served (a CRD not installed, a typo in the group,
// version or resource) or is asked in the wrong scope (a cluster-scoped
// type with a namespace, a namespaced one without). Such a 404 is not
// remembered, and Exists reports it as an error instead of false.
var ErrUnknownResource = errors.New("k8sclient: the API server does not serve this resource type in this scope")

// requestError is every error a GET or LIST for a read comes back as, so
// that all of them look alike: the API server's message as it is, the
// client-go error in the chain (errors.As to *apierrors.StatusError,
// apierrors.IsNotFound, IsForbidden… work; a type assertion does not, for
// any status), and a sentinel for the two kinds of 404.
type requestError struct {
	err  error
	kind error // cache.ErrNotFound, ErrUnknownResource or nil
}

func (e *requestError) Error() string        { return e.err.Error() }
func (e *requestError) Unwrap() error        { return e.err }
func (e *requestError) Is(target error) bool { return e.kind != nil && target == e.kind }

// wrapRequestError classifies err, the failure of a GET or LIST. The API
// server's 404 for a missing object names it in the Status's details; its
// 404 for a path it does not serve has no details, or no name in them.
func wrapRequestError(err error) error {
	if err == nil {
		return nil
	}
	e := &requestError{err: err}
	if apierrors.IsNotFound(err) {
		e.kind = ErrUnknownResource
		var st apierrors.APIStatus
		if errors.As(err, &st) {
			if d := st.Status().Details; d != nil && d.Name != "" {
				e.kind = cache.ErrNotFound
			}
		}
	}
	return e
}

// isObjectNotFound reports whether err is a 404 for a missing object: what
// is remembered for the negative TTL, and what Exists answers false for.
func isObjectNotFound(err error) bool { return errors.Is(err, cache.ErrNotFound) }

func (r *resource[T, L]) get(ctx context.Context, ns, name string, ro readOptions) (T, error) {
	k := key{ns: ns, name: name}
	if e, ok, err := r.peek(k, ro); ok {
		return r.objOut(e, ro, err)
	}
	load := func(ctx context.Context) (entry[T, L], error) {
		r.requests.Add(1)
		obj, err := r.be.get(ctx, ns, name)
		r.answered(err)
		if err != nil {
			return entry[T, L]{}, wrapRequestError(err)
		}
		return entry[T, L]{obj: obj, cost: r.be.prepObj(obj)}, nil
	}
	e, err := r.fetch(ctx, k, ro, load)
	return r.objOut(e, ro, err)
}

func (r *resource[T, L]) exists(ctx context.Context, ns, name string, ro readOptions) (bool, error) {
	ro.shared = true // nothing of the object leaves
	_, err := r.get(ctx, ns, name, ro)
	switch {
	case err == nil:
		return true, nil
	case isObjectNotFound(err):
		return false, nil
	default:
		return false, err
	}
}

func (r *resource[T, L]) list(ctx context.Context, ns string, opts metav1.ListOptions, ro readOptions) (L, error) {
	labelSel, fieldSel, ok := listKey(opts)
	if !ok {
		r.uncached.Add(1)
		r.requests.Add(1)
		l, err := r.be.list(ctx, ns, opts)
		r.answered(err)
		if err != nil {
			return l, wrapRequestError(err)
		}
		r.be.prepList(l)
		return l, nil
	}
	k := key{list: true, ns: ns, name: listName(labelSel, fieldSel), gen: r.gen(ns)}
	if e, ok, err := r.peek(k, ro); ok {
		return r.listOut(e, ro, err)
	}
	load := func(ctx context.Context) (entry[T, L], error) {
		r.requests.Add(1)
		l, err := r.be.list(ctx, ns, metav1.ListOptions{
			LabelSelector:  opts.LabelSelector,
			FieldSelector:  opts.FieldSelector,
			TimeoutSeconds: opts.TimeoutSeconds,
		})
		r.answered(err)
		if err != nil {
			return entry[T, L]{}, wrapRequestError(err)
		}
		return entry[T, L]{list: l, cost: r.be.prepList(l)}, nil
	}
	e, err := r.fetch(ctx, k, ro, load)
	return r.listOut(e, ro, err)
}

func (r *resource[T, L]) answered(err error) {
	if r.be.answered != nil {
		r.be.answered(err)
	}
}

// peek answers k from the cache alone, unless ro asks for a fresh read.
// Get and List call it before making their load closures, so that a hit
// does not pay for one.
func (r *resource[T, L]) peek(k key, ro readOptions) (entry[T, L], bool, error) {
	if ro.fresh {
		return entry[T, L]{}, false, nil
	}
	return r.cache.Peek(k)
}

// fetch answers k with load, through the cache or, for a fresh read,
// around it.
func (r *resource[T, L]) fetch(ctx context.Context, k key, ro readOptions, load func(context.Context) (entry[T, L], error)) (entry[T, L], error) {
	if ro.fresh {
		r.fresh.Add(1)
		return r.cache.Refresh(ctx, k, load)
	}
	return r.cache.Get(ctx, k, load)
}

// objOut and listOut hand out what was read: the cached value itself if
// ro says Shared, a deep copy otherwise.
func (r *resource[T, L]) objOut(e entry[T, L], ro readOptions, err error) (T, error) {
	if err != nil || ro.shared {
		return e.obj, err
	}
	return r.be.copyObj(e.obj), nil
}

func (r *resource[T, L]) listOut(e entry[T, L], ro readOptions, err error) (L, error) {
	if err != nil || ro.shared {
		return e.list, err
	}
	return r.be.copyList(e.list), nil
}

// listKey returns the canonical selectors of a List that can be cached:
// one that asks for the whole, current collection. A List with Limit or
// Continue (a page), a resourceVersion (an older or cached state), or watch
// options is not cached.
func listKey(opts metav1.ListOptions) (labelSel, fieldSel string, ok bool) {
	if opts.Limit != 0 || opts.Continue != "" || opts.ResourceVersion != "" || opts.ResourceVersionMatch != "" ||
		opts.Watch || opts.AllowWatchBookmarks || opts.SendInitialEvents != nil {
		return "", "", false
	}
	if opts.LabelSelector != "" {
		ls, err := labels.Parse(opts.LabelSelector)
		if err != nil {
			return "", "", false // the server will say what is wrong
		}
		labelSel = ls.String()
	}
	if opts.FieldSelector != "" {
		fs, err := fields.ParseSelector(opts.FieldSelector)
		if err != nil {
			return "", "", false
		}
		fieldSel = fs.String()
	}
	return labelSel, fieldSel, true
}

func (r *resource[T, L]) gen(ns string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gens[ns]
}

// invalidate drops the object ns/name (if name is not empty) and every
// List that could hold it: those of its namespace and those across all
// namespaces.
func (r *resource[T, L]) invalidate(ns, name string) {
	r.invalidations.Add(1)
	if name != "" {
		r.cache.Invalidate(key{ns: ns, name: name})
	}
	r.mu.Lock()
	r.gens[ns]++
	if ns != "" {
		r.gens[""]++
	}
	r.mu.Unlock()
}

// written invalidates what a write of names in ns may have changed:
// called after every write, failed or not (a write that timed out may
// still have been applied). With no name known (a failed Create with
// generateName), it drops the namespace's Lists.
func (r *resource[T, L]) written(ns string, names ...string) {
	r.writes.Add(1)
	dropped := false
	for i, name := range names {
		if name != "" && !slices.Contains(names[:i], name) {
			r.invalidate(ns, name)
			dropped = true
		}
	}
	if !dropped {
		r.invalidate(ns, "")
	}
}

// purge drops everything.
func (r *resource[T, L]) purge() {
	r.invalidations.Add(1)
	r.cache.Purge()
}

func (r *resource[T, L]) close() { r.cache.Close() }

func (r *resource[T, L]) stats() ResourceStats {
	m := r.cache.Stats()
	return ResourceStats{
		Hits:            m.Hits,
		NegativeHits:    m.NegativeHits,
		Misses:          m.Misses,
		Coalesced:       m.Coalesced,
		Requests:        r.requests.Load(),
		Fresh:           r.fresh.Load(),
		Uncached:        r.uncached.Load(),
		Errors:          m.LoadErrors,
		Evictions:       m.Evictions,
		Invalidations:   r.invalidations.Load(),
		Writes:          r.writes.Load(),
		RequestsAvoided: m.Hits + m.NegativeHits + m.Coalesced,
		Watching:        r.watching.Load(),
		WatchEvents:     r.watchEvents.Load(),
		WatchRestarts:   r.watchRestarts.Load(),
		WatchError:      r.watchError(),
	}
}

func (r *resource[T, L]) watchError() error {
	if e := r.watchErr.Load(); e != nil {
		return e.err
	}
	return nil
}
