package k8sclient

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Defaults of New and NewTyped, each changed by the option named.
const (
	DefaultTTL         = 30 * time.Second       // WithTTL
	DefaultNegativeTTL = 5 * time.Second        // WithNegativeTTL
	DefaultMaxCost     = 64 << 20               // WithMaxCost: 64 MiB per resource type
	DefaultWatchRetry  = 250 * time.Millisecond // WithWatchBackoff: the first wait
	DefaultWatchMaxGap = 30 * time.Second       // WithWatchBackoff: the longest wait
	DefaultWatchProbe  = time.Second            // WithWatchProbe
)

// Bounds the options check.
const (
	maxTTL          = 365 * 24 * time.Hour
	minWatchBackoff = time.Millisecond
)

// Option configures New and NewTyped. Options that name a resource type
// (WithTTLFor, WithWatch) apply to New only; NewTyped rejects them.
type Option func(*options) error

type options struct {
	ttl          time.Duration
	ttlFor       map[schema.GroupVersionResource]time.Duration
	negTTL       time.Duration // 0: 404s are not remembered
	maxCost      int64
	keepManaged  bool
	transform    func(runtime.Object)
	watch        []schema.GroupVersionResource
	watchRetry   time.Duration
	watchMaxGap  time.Duration
	watchProbe   time.Duration
	now          func() time.Time // nil: time.Now
	logger       *slog.Logger
	typedOnlyErr error // set by options NewTyped must reject
}

func defaultOptions() options {
	return options{
		ttl:         DefaultTTL,
		negTTL:      DefaultNegativeTTL,
		maxCost:     DefaultMaxCost,
		watchRetry:  DefaultWatchRetry,
		watchMaxGap: DefaultWatchMaxGap,
		watchProbe:  DefaultWatchProbe,
		logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func (o *options) apply(opts []Option) error {
	for _, opt := range opts {
		if opt == nil {
			return errors.New("k8sclient: nil Option")
		}
		if err := opt(o); err != nil {
			return err
		}
	}
	if o.watchMaxGap < o.watchRetry {
		return fmt.Errorf("k8sclient: WithWatchBackoff: the longest wait (%v) is shorter than the first (%v)", o.watchMaxGap, o.watchRetry)
	}
	return nil
}

// ttlOf returns the TTL and negative TTL of gvr's cache: its own TTL if
// WithTTLFor set one, and the negative TTL capped at that TTL.
func (o *options) ttlOf(gvr schema.GroupVersionResource) (ttl, neg time.Duration) {
	ttl = o.ttl
	if d, ok := o.ttlFor[gvr]; ok {
		ttl = d
	}
	return ttl, min(o.negTTL, ttl)
}

func checkTTL(name string, d time.Duration) error {
	if d <= 0 || d > maxTTL {
		return fmt.Errorf("k8sclient: %s(%v): the TTL must be positive and at most a year", name, d)
	}
	return nil
}

// WithTTL sets how long an object or List is served from memory before the
// next read fetches it again; the TTL counts from the moment the fetch
// started. Without WithWatch this is the bound on staleness: a change made
// by anyone else is seen at the latest one TTL after it. The default is
// 30s (DefaultTTL).
func WithTTL(d time.Duration) Option {
	return func(o *options) error {
		if err := checkTTL("WithTTL", d); err != nil {
			return err
		}
		o.ttl = d
		return nil
	}
}

// WithTTLFor sets the TTL of one resource type, overriding WithTTL for it:
// for example minutes for a CRD that changes once a day, seconds for Jobs.
// New only.
func WithTTLFor(gvr schema.GroupVersionResource, d time.Duration) Option {
	return func(o *options) error {
		if err := checkTTL("WithTTLFor", d); err != nil {
			return err
		}
		if gvr.Resource == "" || gvr.Version == "" {
			return fmt.Errorf("k8sclient: WithTTLFor(%v): the resource and version must be set", gvr)
		}
		if o.ttlFor == nil {
			o.ttlFor = make(map[schema.GroupVersionResource]time.Duration)
		}
		o.ttlFor[gvr] = d
		o.typedOnlyErr = errors.New("k8sclient: WithTTLFor names a resource type: use WithTTL with NewTyped")
		return nil
	}
}

// WithNegativeTTL sets how long a 404 Not Found from a Get (or Exists) is
// remembered: until then the same question is answered "not found" without
// a request. It is capped at the resource type's TTL. Zero turns negative
// caching off. The default is 5s (DefaultNegativeTTL).
func WithNegativeTTL(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 || d > maxTTL {
			return fmt.Errorf("k8sclient: WithNegativeTTL(%v): the TTL must be zero (off) or positive, at most a year", d)
		}
		o.negTTL = d
		return nil
	}
}

// WithMaxCost bounds the memory each resource type's cache holds, in
// bytes, as estimated from the objects cached (the heap their maps,
// slices and strings take; within a few percent of the real figure for
// decoded Jobs) plus about 300 bytes per entry for the cache's own
// bookkeeping. When the bound is reached, entries are evicted by
// ristretto's TinyLFU policy, and an entry bigger than the bound is not
// cached at all. A client using n resource types holds at most n times
// this. The default is 64 MiB (DefaultMaxCost).
//
// The bound is not paid up front: a resource type costs what it holds
// and about 4 KiB more (one Job read: 11 KiB in all). Once a type holds 1 MiB
// (or an eighth of the bound, if less) its cache adds ristretto's admission
// policy, about 300 KiB, whose counters then grow with the entries held,
// to about 3.4 MiB at the default bound once the type holds 16,400
// objects; see memory.WithMaxCost.
func WithMaxCost(bytes int64) Option {
	return func(o *options) error {
		if bytes <= 0 {
			return fmt.Errorf("k8sclient: WithMaxCost(%d): the bound must be positive", bytes)
		}
		o.maxCost = bytes
		return nil
	}
}

// WithManagedFields keeps metadata.managedFields in cached objects. By
// default they are dropped before an object is cached, which often halves
// its size; they only matter to server-side apply, which works on the
// server's copy. An Update of an object read without them leaves the
// server's managedFields as they were.
func WithManagedFields() Option {
	return func(o *options) error {
		o.keepManaged = true
		return nil
	}
}

// WithTransform sets a function that changes each object before it is
// cached (after managedFields are dropped), to keep less of it in memory,
// as an informer's TransformFunc does. It gets the objects of a Get and
// every item of a List, as *unstructured.Unstructured from a Client and as
// T from a Typed, and must change them in place, only them, and not keep
// them. Callers then receive the transformed objects.
func WithTransform(fn func(obj runtime.Object)) Option {
	return func(o *options) error {
		if fn == nil {
			return errors.New("k8sclient: WithTransform(nil)")
		}
		o.transform = fn
		return nil
	}
}

// WithWatch makes the client watch each resource type given, across all
// namespaces, and drop a cached object and the Lists that could hold it as
// soon as a change to it is seen, instead of waiting for its TTL. The TTL
// still applies: it bounds staleness while a watch is down. A watch that
// fails is retried every second while the API server does not answer
// (WithWatchProbe), and with exponential backoff after failures the
// server answered (WithWatchBackoff), cut short by any request through
// the Client that the server answers; it resumes
// from the last resourceVersion it saw, and if the server has forgotten
// that one (410 Gone) the resource type's cache is emptied as soon as the
// server says so and the watch starts from now, without waiting. Watching
// needs the watch verb (and list, for the resourceVersion to start from)
// on the resource type across the cluster. Without them New still
// succeeds (it does not wait for the watch): the cache works as without
// WithWatch, Stats shows Watching false and the 403 in WatchError, the
// logger is told at level Error, and the watch is retried only at the
// longest backoff. New only.
func WithWatch(gvrs ...schema.GroupVersionResource) Option {
	return func(o *options) error {
		for _, gvr := range gvrs {
			if gvr.Resource == "" || gvr.Version == "" {
				return fmt.Errorf("k8sclient: WithWatch(%v): the resource and version must be set", gvr)
			}
		}
		o.watch = append(o.watch, gvrs...)
		o.typedOnlyErr = errors.New("k8sclient: WithWatch applies to New only")
		return nil
	}
}

// WithWatchBackoff sets how long a failed watch waits before its first
// retry, and the longest it waits between retries (the wait doubles, with
// up to 50% jitter but never beyond longest, after each failure, and
// starts again at first once a watch has opened). It applies to failures
// the API server answered (5xx, 429, a stream it ended); a request
// through the Client that the server answers ends the wait early, once
// until a watch opens again. The defaults are 250ms and 30s.
func WithWatchBackoff(first, longest time.Duration) Option {
	return func(o *options) error {
		if first < minWatchBackoff || longest < minWatchBackoff || first > maxTTL || longest > maxTTL {
			return fmt.Errorf("k8sclient: WithWatchBackoff(%v, %v): waits must be between %v and a year", first, longest, minWatchBackoff)
		}
		o.watchRetry, o.watchMaxGap = first, longest
		return nil
	}
}

// WithWatchProbe sets how often a watch tries again while nothing
// answers at the API server's address (the connection is refused, or
// there is no route to it: the server is down or restarting), instead of
// backing off: such a try costs a refused connection and no server any
// work, and the watch is back within about d (up to 1.5 d, with jitter)
// of the server's return, however long the outage. It is capped at
// WithWatchBackoff's longest wait. The default is 1s (DefaultWatchProbe).
func WithWatchProbe(d time.Duration) Option {
	return func(o *options) error {
		if d < minWatchBackoff || d > maxTTL {
			return fmt.Errorf("k8sclient: WithWatchProbe(%v): the period must be between %v and a year", d, minWatchBackoff)
		}
		o.watchProbe = d
		return nil
	}
}

// WithClock sets the clock TTLs are measured with; the default is
// time.Now. It is meant for tests.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("k8sclient: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}

// WithLogger sets where watch failures and restarts are logged. By default
// nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("k8sclient: WithLogger(nil)")
		}
		o.logger = l
		return nil
	}
}

// ReadOption changes one read (Get, List, Exists). It is a value, not a
// function, so that passing one costs a hit no allocation.
type ReadOption struct{ flag readFlag }

type readFlag uint8

const (
	readFresh readFlag = 1 << iota
	readShared
)

type readOptions struct {
	fresh  bool
	shared bool
}

// Fresh reads from the API server whatever the cache holds, for operations
// that must not act on stale data (a read before an update, a check before
// a decision that is hard to undo). What the server answers replaces the
// cached entry, and reads of the same key that start while it is running
// wait for it.
func Fresh() ReadOption { return ReadOption{readFresh} }

// Shared returns the cached object itself instead of a deep copy: the
// cost of a hit drops from a deep copy's (microseconds, allocations in
// proportion to the object's size) to a lookup's. The caller must treat
// the object as read-only, as it would one from an informer's lister:
// changing it changes what every later reader gets. Call DeepCopy before
// changing it.
func Shared() ReadOption { return ReadOption{readShared} }

func readOpts(opts []ReadOption) readOptions {
	var f readFlag
	for _, o := range opts {
		f |= o.flag
	}
	return readOptions{fresh: f&readFresh != 0, shared: f&readShared != 0}
}
