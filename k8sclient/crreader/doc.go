// Package crreader adapts a k8sclient.Client to controller-runtime's
// client.Reader, for controllers and operators that read a few objects by
// name over and over and do not want controller-runtime's cache, which
// starts an informer per type and holds every object of it (cert-manager
// #4722: 8 GB for 30,000 Secrets; controller-runtime #2570 asks for a
// lazy, per-object cache).
//
// A Reader answers Get and List from the Client's cache: an object is
// fetched by one GET on first use and kept for its type's TTL, a List by
// its namespace and selectors; nothing else of the type is held. Swap it
// in where the objects read by name are read:
//
//	kc, err := k8sclient.New(dynamic.NewForConfigOrDie(cfg), k8sclient.WithTTL(time.Minute))
//	r, err := crreader.New(kc, mgr.GetScheme(), mgr.GetRESTMapper())
//	var job batchv1.Job
//	err = r.Get(ctx, client.ObjectKey{Namespace: "ci", Name: "pi"}, &job)
//	if client.IgnoreNotFound(err) != nil { ... }
//
// Objects may be typed (registered in the scheme: *batchv1.Job),
// *unstructured.Unstructured or *metav1.PartialObjectMetadata (with their
// GroupVersionKind set). The RESTMapper turns their kind into the resource
// the Client caches under; the Client's Stats are keyed by it (GVR).
//
// # Options
//
// Get takes client.GetOptions: UnsafeDisableDeepCopy hands out the cached
// map of an unstructured object instead of a copy (typed objects are
// always converted, hence copies); Raw with a ResourceVersion is sent to
// the API server as it is, uncached. List takes client.InNamespace,
// MatchingLabels, MatchingFields, HasLabels and their selector forms,
// which make the cache key; a List with client.Limit, client.Continue or
// Raw's ResourceVersion asks for a page or an older state and is sent as
// it is, uncached (counted in Stats as Uncached).
//
// # Errors
//
// A missing object's error satisfies apierrors.IsNotFound, so
// client.IgnoreNotFound works, and is remembered for the negative TTL. A
// type the API server does not serve is an error that is not NotFound
// (k8sclient.ErrUnknownResource), as is a Get of a namespaced type
// without a namespace (ErrNoNamespace).
//
// # Staleness
//
// A Reader sees what the Client sees: changes made elsewhere within the
// TTL, or at once with k8sclient.WithWatch. Writes made through
// controller-runtime's client are elsewhere: call Invalidate after them,
// or watch the type.
package crreader
