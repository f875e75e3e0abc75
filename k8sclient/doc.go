// Package k8sclient provides a read-through, TTL'd cache in front of
// client-go, for programs that Get, List or check the existence of a few
// rarely-changing Kubernetes objects over and over: a CRD read on every
// reconcile or install step (Glasskube's PackageRepository), a "does this
// Job exist?" asked by a scheduler (DolphinScheduler's jobExist).
//
// New wraps a dynamic.Interface; NewTyped wraps a typed client such as
// clientset.BatchV1().Jobs:
//
//	c, err := k8sclient.New(dynamic.NewForConfigOrDie(cfg),
//		k8sclient.WithTTLFor(repoGVR, 5*time.Minute))
//	repo, err := c.Get(ctx, repoGVR, "", "glasskube")        // one GET, then memory
//	ok, err := c.JobExists(ctx, "scheduler", "flink-job-42") // one GET by name, never a LIST
//
// # What is cached, and for how long
//
// Objects (by resource type, namespace and name) and whole Lists (by
// resource type, namespace, label selector and field selector) are kept
// in memory for a TTL per resource type (WithTTL, WithTTLFor; 30s by
// default), within a memory bound per resource type (WithMaxCost, 64 MiB
// by default, estimated from the objects' sizes, and not paid up front: a
// type costs what it holds). A 404 is remembered for
// a shorter TTL (WithNegativeTTL, 5s by default), so that a loop asking
// whether something exists does not reach the API server either. Only
// what is asked for is held: unlike an informer, the cache never holds
// every object of a type.
//
// metadata.managedFields is dropped from cached objects by default
// (WithManagedFields keeps it), and WithTransform can drop more.
//
// # Staleness
//
// Without WithWatch, a change made by anyone else is seen at the latest
// one TTL after it was made: staleness is bounded by the TTL, and by
// nothing shorter. Choose the TTL per type accordingly.
//
// Writes made through the client (Create, Update, Patch, Delete) are seen
// at once: each drops the object it wrote and every cached List that could
// hold it (its namespace's and the all-namespace ones), whether it
// succeeded or not. Invalidate does the same for writes made elsewhere.
//
// WithWatch(gvr) opens one watch per resource type and drops an object and
// its Lists as soon as the watch reports a change, so that staleness is
// the watch's delay. If the watch fails the TTL bounds staleness until
// it is back: it is retried every second while the API server does not
// answer at all (down or restarting; WithWatchProbe), so it is back
// within about a second of the server, and with backoff after errors the
// server answered, a backoff that any request through the client the
// server answers cuts short. A 410 Gone empties the type's cache at once. A watch RBAC refuses leaves the client working as
// without WithWatch, with the 403 in Stats (WatchError) and the log.
//
// A read that must not be stale (before an update that must not conflict,
// before a decision that is hard to undo) passes Fresh: it goes to the API
// server whatever the cache holds, and its answer replaces the cached one.
//
// A fetch never writes back something older than what an invalidation
// already made the cache forget: a fetch that started before a write,
// a watch event or Invalidate does not store its result (its callers still
// receive it), and later reads do not wait for it.
//
// # Requests
//
// Concurrent reads of the same uncached key make one request, whose result
// they all receive (64 goroutines, one GET). Every fetch is a quorum read
// (no resourceVersion). Exists sends exactly one GET by name, never a
// LIST, and answers false with a nil error on a 404 for the object only;
// every other error is returned, a 404 for the resource type too
// (ErrUnknownResource: a CRD not installed, a typo in the group, version
// or resource, the wrong scope), and only the first kind is remembered. A List with Limit, Continue, ResourceVersion or
// watch options is not cached: it is sent as it is. Errors of reads wrap
// client-go's, all alike (errors.As to *apierrors.StatusError and the
// apierrors helpers such as IsConflict, IsTooManyRequests work; a type
// assertion does not); a 404 for an object also satisfies errors.Is(err,
// cache.ErrNotFound). Errors of writes are client-go's as they are. Requests go
// through the wrapped client, so its rate limiter (client-go's default
// QPS 5, Burst 10) applies to the misses only.
//
// # Returned objects
//
// Get and List return deep copies: the caller may change them. Shared
// returns the cached object itself instead, as an informer's lister does,
// for hot paths that only read; such an object must not be changed.
//
// # RBAC
//
// The client needs only the get verb (Get, Exists, JobExists) and list
// (List) on the resource types it reads, in the namespaces it reads, plus
// the verbs of the writes it passes through. It needs neither watch nor
// cluster-wide list unless WithWatch is used: then it needs list and watch
// on the watched types across all namespaces. An informer-based cache
// always needs list and watch, and holds every object of the type.
//
// # Stats
//
// Stats reports, per resource type, hits, negative hits, misses, coalesced
// requests, requests made and avoided, evictions, invalidations and the
// watch's state; HitRatio and Add summarise them.
//
// # Concurrency
//
// Every method is safe for concurrent use, except Close, which must be
// called once the client is no longer in use.
//
// # Breaking changes
//
// JobExists takes the namespace before the name, as Exists, Get and every
// other method do: JobExists(ctx, namespace, name). It used to take
// (jobName, namespace), the order of DolphinScheduler's jobExist; both are
// strings, so a call in the old order still compiles and asks for the
// wrong Job: swap its arguments.
package k8sclient
