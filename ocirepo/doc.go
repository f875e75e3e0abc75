// Package ocirepo provides a cache.LayerCache whose blobs live in a
// registry repository: the shared tier of a CI fleet, as BuildKit's
// type=registry cache is, in Harbor, distribution or any OCI registry.
// New("harbor.example.com/ci/cache") and NewAt("harbor", "ci/cache")
// return a *Cache; buildcache.Open opens one for an oci:// URL. A Cache is
// safe for concurrent use, and any number of them, in any number of
// processes, may share one repository.
//
// # Requests
//
// A Cache talks to the registry through a regclient.Client (WithClient;
// default regclient.New()), which sets credentials (the Docker keychain
// by default), plain HTTP for loopback and insecure registries, retries
// and timeouts. Its blob and index requests ask for push scope, so one
// login serves its reads and writes.
//
// # The index
//
// A registry cannot list the blobs of a repository, so the set of cached
// blobs is kept in an index: an OCI artifact manifest (artifactType
// IndexArtifactType, media type BlobMediaType for each blob) tagged
// DefaultIndexTag, or what WithIndexTag says. Put uploads the blob and
// then adds it to the index; Delete removes it from the index and then
// asks the registry to delete the blob, tolerating registries that do not
// allow that; Walk lists the index; Stat is membership in the index and a
// HEAD of the blob. A blob listed in the index but gone from the registry
// (retention, garbage collection) is reported as cache.ErrNotFound and is
// dropped from the index.
//
// Each index write makes a new manifest revision; the old ones become
// untagged and are left to the registry's garbage collection (Harbor:
// "untagged artifacts"). The index holds about 25,000 blobs before it
// reaches the registries' 4 MiB manifest limit; a Put beyond that fails
// with cache.ErrNoSpace.
//
// # Concurrent writers
//
// Registries have no compare-and-swap on tags, so index updates are
// read-modify-write, protected as well as the distribution API allows:
//
//   - Within one Cache, updates are serialised, and those that arrive
//     while one is being written are merged into the next write.
//   - The write is conditional (If-Match with the ETag the registry gave
//     for the version read, If-None-Match: * for a new tag). A registry that
//     honours this answers 412 to a write that would lose an update, and
//     the update is merged again. Distribution, Harbor and
//     go-containerregistry's registry ignore these headers.
//   - After a write, and a settling wait (WithIndexSettle), the index is
//     read again; if another writer's stale write has dropped this
//     update's entries, they are merged in again, up to 10 rounds.
//
// What is not guaranteed, on registries that ignore If-Match: a writer
// that read the index before this write and writes it back more than the
// settling wait after it drops this write's entries unnoticed. The worst
// outcome of such a race is a cache miss — the blob stays in the registry
// and the next Put of it is recorded again — never a wrong blob: every Get
// is verified. Likewise a Delete racing with another process's Put of the
// same blob may leave an entry whose blob is gone, which the next Stat or
// Get finds and drops.
//
// # Integrity
//
// Put hashes the bytes while uploading them and fails with
// cache.ErrDigestMismatch, recording nothing, when they do not match; the
// registry also checks the digest before it commits an upload. Get
// verifies while streaming: a mismatch fails the read with
// cache.ErrCorrupt and removes the entry (and, unless disabled, the blob).
// A Put whose context ends before the upload is committed records nothing;
// one whose context ends while its index update is under way returns the
// context's error, and the update may still take effect.
//
// # Errors
//
// A registry that gives no answer (refused, reset, timed out, name not
// found) fails Stat, Get, Put and Walk with an error satisfying
// errors.Is(err, cache.ErrOffline), with the *regclient.RemoteError in
// the chain.
package ocirepo
