// Package k8stest provides an in-process Kubernetes API-server double for
// tests and examples: an HTTP server on 127.0.0.1 that speaks the real JSON
// paths of the Kubernetes API for the resource types registered with it, so
// that real client-go clients (dynamic, typed, informers) built from
// rest.Config{Host: srv.URL} talk to it as they would to kube-apiserver.
//
// It serves batch/v1 Jobs (namespaced) and the Glasskube PackageRepository
// custom resource, packages.glasskube.dev/v1alpha1 packagerepositories
// (cluster-scoped), out of the box; Register adds more.
//
// # What it speaks
//
//   - get, list (label selectors; field selectors on metadata.name and
//     metadata.namespace; limit and continue), create (generateName too),
//     update (409 Conflict on a stale resourceVersion), patch (JSON merge
//     patch; a strategic merge patch is applied as a merge patch), delete,
//     on /api/v1/… and /apis/GROUP/VERSION/…, namespaced or across all
//     namespaces, with the subresource "status" treated as the object.
//   - watch, as chunked JSON watch events: from a resourceVersion (410 Gone
//     as an ERROR event once Compact has dropped it), from "now" with
//     synthetic ADDED events, sendInitialEvents with the closing BOOKMARK
//     that informers wait for, and bookmarks on request.
//   - metav1.Status errors with the reason a real server gives for the code.
//
// Objects get a uid, a creationTimestamp, a resourceVersion from one global
// counter, a generation, and a managedFields entry, as the real server adds
// them. It is not a validating server: it stores what it is given.
//
// # What it lets a test do
//
// Count requests by verb and resource (Count, BytesSent), inject faults
// (Inject: a status code such as 404, 409, 429 or 500, optionally with
// Retry-After; a delay; or a hold until a channel is closed), restrict the
// verbs a caller is allowed as RBAC would (Allow), end every open watch
// (CloseWatches), forget old events so that resuming a watch fails with
// 410 Gone (Compact), and change objects behind the client's back (Create,
// Update, Delete).
//
// Close ends open watches and held requests before it stops the server.
package k8stest
