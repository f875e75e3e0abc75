package k8sclient

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// ErrClosed is returned by the methods of a Client or Typed after Close.
var ErrClosed = errors.New("k8sclient: closed")

// jobsGVR is batch/v1 Jobs, for JobExists.
var jobsGVR = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}

// Client is a read-through, TTL'd cache in front of a client-go dynamic
// client. Create it with New and release it with Close. Its methods are
// safe for concurrent use, except Close: see there.
//
// Objects and Lists are cached per resource type, each with its own TTL
// (WithTTL, WithTTLFor) and cost bound (WithMaxCost); the caches are made
// on first use of a type. The namespace argument is "" for cluster-scoped
// resources, and for Lists across all namespaces.
type Client struct {
	dyn dynamic.Interface
	o   options

	res    atomic.Pointer[map[schema.GroupVersionResource]*dynResource] // copy on write
	last   atomic.Pointer[lastResource]                                 // the type used last
	mu     sync.Mutex                                                   // serialises writers of res
	closed atomic.Bool

	stopWatches context.CancelFunc
	watchers    sync.WaitGroup
	up          beacon // wakes watches when a request is answered
}

type dynResource = resource[*unstructured.Unstructured, *unstructured.UnstructuredList]

type lastResource struct {
	gvr schema.GroupVersionResource
	r   *dynResource
}

// New returns a Client reading through dyn, configured by opts. Without
// options, objects and Lists live for 30s, 404s for 5s, each resource type
// holds at most 64 MiB, managedFields are dropped, and nothing is watched.
// With WithWatch, New starts the watches (in the background: it does not
// wait for them to be established).
func New(dyn dynamic.Interface, opts ...Option) (*Client, error) {
	if dyn == nil {
		return nil, errors.New("k8sclient: New: nil dynamic.Interface")
	}
	o := defaultOptions()
	if err := o.apply(opts); err != nil {
		return nil, err
	}
	c := &Client{dyn: dyn, o: o}
	c.res.Store(&map[schema.GroupVersionResource]*dynResource{})
	ctx, cancel := context.WithCancel(context.Background())
	c.stopWatches = cancel
	seen := map[schema.GroupVersionResource]bool{}
	for _, gvr := range o.watch {
		if seen[gvr] {
			continue
		}
		seen[gvr] = true
		r, err := c.resource(gvr)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.watchers.Go(func() { c.watch(ctx, gvr, r) })
	}
	return c, nil
}

// resource returns gvr's cache, making it on first use.
func (c *Client) resource(gvr schema.GroupVersionResource) (*dynResource, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	// Most programs read one or two types over and over: checking the last
	// one used first saves hashing the GroupVersionResource on a hit.
	if l := c.last.Load(); l != nil && l.gvr == gvr {
		return l.r, nil
	}
	if r := (*c.res.Load())[gvr]; r != nil {
		c.last.Store(&lastResource{gvr, r})
		return r, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return nil, ErrClosed
	}
	old := *c.res.Load()
	if r := old[gvr]; r != nil {
		return r, nil
	}
	ttl, neg := c.o.ttlOf(gvr)
	ri := c.dyn.Resource(gvr)
	o := &c.o
	r, err := newResource(gvr.GroupResource().String()+"/"+gvr.Version, o, ttl, neg, backend[*unstructured.Unstructured, *unstructured.UnstructuredList]{
		get: func(ctx context.Context, ns, name string) (*unstructured.Unstructured, error) {
			return ri.Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		},
		list: func(ctx context.Context, ns string, opts metav1.ListOptions) (*unstructured.UnstructuredList, error) {
			return ri.Namespace(ns).List(ctx, opts)
		},
		answered: c.answered,
		copyObj:  (*unstructured.Unstructured).DeepCopy,
		copyList: (*unstructured.UnstructuredList).DeepCopy,
		prepObj: func(u *unstructured.Unstructured) int64 {
			o.prepUnstructured(u)
			return unstructuredSize(u.Object)
		},
		prepList: func(l *unstructured.UnstructuredList) int64 {
			n := unstructuredSize(l.Object)
			for i := range l.Items {
				o.prepUnstructured(&l.Items[i])
				n += unstructuredSize(l.Items[i].Object)
			}
			return n
		},
	})
	if err != nil {
		return nil, err
	}
	m := maps.Clone(old)
	m[gvr] = r
	c.res.Store(&m)
	return r, nil
}

// Get returns the object name of resource type gvr in namespace: from
// memory if a fetch of it is younger than the type's TTL, otherwise by one
// GET, shared by every caller asking for it meanwhile. A 404 for a
// missing object is returned as an error satisfying apierrors.IsNotFound
// and errors.Is(err, cache.ErrNotFound), and remembered for the negative
// TTL. A 404 for a resource type the server does not serve (or not in
// this scope) satisfies errors.Is(err, ErrUnknownResource) instead, and
// is not remembered; nor are other errors. Every error of a request keeps
// client-go's in its chain: use errors.As or the apierrors helpers.
//
// The object is a deep copy, the caller's to change, unless Shared is
// given. With Fresh, Get fetches the object whatever the cache holds.
func (c *Client) Get(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, opts ...ReadOption) (*unstructured.Unstructured, error) {
	r, err := c.resource(gvr)
	if err != nil {
		return nil, err
	}
	return r.get(ctx, namespace, name, readOpts(opts))
}

// List returns the objects of resource type gvr in namespace ("" for all
// namespaces) that match opts' label and field selectors: from memory if a
// LIST with the same namespace and selectors is younger than the TTL and
// nothing in the namespace has been written through this client (or seen
// changing by its watch) since, otherwise by one LIST, shared as Get's
// GET is. Selectors are compared in canonical form ("b=2,a=1" is "a=1,b=2").
//
// Only whole, current collections are cached: a List with Limit or
// Continue, ResourceVersion or ResourceVersionMatch, or watch options is
// sent to the API server as it is, every time. The list is a deep copy
// unless Shared is given; with Fresh it is fetched whatever the cache
// holds.
func (c *Client) List(ctx context.Context, gvr schema.GroupVersionResource, namespace string, opts metav1.ListOptions, ropts ...ReadOption) (*unstructured.UnstructuredList, error) {
	r, err := c.resource(gvr)
	if err != nil {
		return nil, err
	}
	return r.list(ctx, namespace, opts, readOpts(ropts))
}

// Exists reports whether the object name of resource type gvr exists in
// namespace. It asks exactly what Get asks (one GET by name, never a LIST,
// answered from memory within the TTL) and shares Get's cache: true if the
// object was found, false with a nil error on a 404 for the object
// (remembered for the negative TTL), and false with the error for any
// other failure, a 404 for the resource type included (ErrUnknownResource:
// a CRD not installed, a wrong group, version or resource, a namespace
// given for a cluster-scoped type or omitted for a namespaced one).
func (c *Client) Exists(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, opts ...ReadOption) (bool, error) {
	r, err := c.resource(gvr)
	if err != nil {
		return false, err
	}
	return r.exists(ctx, namespace, name, readOpts(opts))
}

// JobExists reports whether the batch/v1 Job name exists in namespace,
// keeping the contract of DolphinScheduler's K8sUtils.jobExist(jobName,
// namespace): true if it exists, false if it does not, and any other
// failure reported (jobExist throws ApiException; JobExists returns the
// error). Unlike the jobExist that listed every Job of the namespace and
// filtered them by name, it is Exists: one GET by name, remembered for the
// TTL (a 404 for the negative TTL); pass Fresh for a check that must not
// be stale.
//
// Its arguments come in Exists's order, namespace then name. Before
// issue 18 they were (jobName, namespace), jobExist's order: two strings
// that swap without a compile error, so callers of the old order must
// swap them (a breaking change).
func (c *Client) JobExists(ctx context.Context, namespace, name string, opts ...ReadOption) (bool, error) {
	return c.Exists(ctx, jobsGVR, namespace, name, opts...)
}

// Invalidate drops the cached object name of resource type gvr in
// namespace, with its remembered 404 if any, and every cached List that
// could hold it (those of its namespace and those across all namespaces),
// so that the next read fetches them again. A fetch already running will
// not store its result. With name "", it drops only the Lists.
func (c *Client) Invalidate(gvr schema.GroupVersionResource, namespace, name string) {
	if r := (*c.res.Load())[gvr]; r != nil {
		r.invalidate(namespace, name)
	}
}

// Purge drops everything cached, of every resource type.
func (c *Client) Purge() {
	for _, r := range *c.res.Load() {
		r.purge()
	}
}

// Stats reports what the cache of each resource type used so far has done.
func (c *Client) Stats() map[schema.GroupVersionResource]ResourceStats {
	res := *c.res.Load()
	out := make(map[schema.GroupVersionResource]ResourceStats, len(res))
	for gvr, r := range res {
		out[gvr] = r.stats()
	}
	return out
}

// Close stops the watches, waits for them to end, and drops every cache.
// Afterwards every method but Stats returns ErrClosed. Calling Close twice
// is harmless, but Close must not run concurrently with other methods of
// the Client.
func (c *Client) Close() {
	c.stopWatches()
	c.watchers.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Swap(true) {
		return
	}
	for _, r := range *c.res.Load() {
		r.close() // kept in res for Stats
	}
}

// written invalidates what a write to namespace/names of gvr may have
// changed: called after every write, failed or not (a write that timed
// out may still have been applied).
func (c *Client) written(gvr schema.GroupVersionResource, namespace string, names ...string) {
	r := (*c.res.Load())[gvr]
	if r == nil {
		return // nothing of this type was ever read: nothing to drop
	}
	r.written(namespace, names...)
}

func (c *Client) checkOpen() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Create creates obj in namespace through the dynamic client, then drops
// what it may have changed from the cache: the object (a remembered 404
// for its name included) and the Lists that could hold it. It does so
// whether the create succeeded or not.
func (c *Client) Create(ctx context.Context, gvr schema.GroupVersionResource, namespace string, obj *unstructured.Unstructured, opts metav1.CreateOptions, subresources ...string) (*unstructured.Unstructured, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	out, err := c.dyn.Resource(gvr).Namespace(namespace).Create(ctx, obj, opts, subresources...)
	c.answered(err)
	created := ""
	if out != nil {
		created = out.GetName() // differs from obj's with generateName
	}
	c.written(gvr, namespace, obj.GetName(), created)
	return out, err
}

// Update updates obj in namespace through the dynamic client, then drops
// the object and the Lists that could hold it from the cache, whether the
// update succeeded or not. A 409 Conflict (obj was read from a stale
// cache, or changed meanwhile) is returned as client-go returns it: read
// the object again, with Fresh, and retry.
func (c *Client) Update(ctx context.Context, gvr schema.GroupVersionResource, namespace string, obj *unstructured.Unstructured, opts metav1.UpdateOptions, subresources ...string) (*unstructured.Unstructured, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	out, err := c.dyn.Resource(gvr).Namespace(namespace).Update(ctx, obj, opts, subresources...)
	c.answered(err)
	c.written(gvr, namespace, obj.GetName())
	return out, err
}

// Patch patches the object name in namespace through the dynamic client
// (any patch type, server-side apply included), then drops the object and
// the Lists that could hold it from the cache, whether the patch succeeded
// or not.
func (c *Client) Patch(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*unstructured.Unstructured, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	out, err := c.dyn.Resource(gvr).Namespace(namespace).Patch(ctx, name, pt, data, opts, subresources...)
	c.answered(err)
	c.written(gvr, namespace, name)
	return out, err
}

// Delete deletes the object name in namespace through the dynamic client,
// then drops the object and the Lists that could hold it from the cache,
// whether the delete succeeded or not.
func (c *Client) Delete(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, opts metav1.DeleteOptions, subresources ...string) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	err := c.dyn.Resource(gvr).Namespace(namespace).Delete(ctx, name, opts, subresources...)
	c.answered(err)
	c.written(gvr, namespace, name)
	return err
}

// Dynamic returns the dynamic client the Client reads through, for what
// the Client does not wrap (watches, DeleteCollection). Writes made
// through it bypass the cache's invalidation: call Invalidate after them.
func (c *Client) Dynamic() dynamic.Interface { return c.dyn }
