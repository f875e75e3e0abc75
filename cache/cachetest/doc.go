// Package cachetest is the conformance suite that every cache.LayerCache
// backend runs. A backend's test is a few lines (see the example for Run):
//
//	func TestConformance(t *testing.T) {
//		cachetest.Run(t, func(t *testing.T) cache.LayerCache {
//			c, err := localfs.Open(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return c
//		}, cachetest.WithCorrupter(corrupt))
//	}
//
// Run checks what package cache promises of a LayerCache and a caller can
// observe: round trips; Puts that are idempotent, verified (wrong bytes,
// wrong size, a failing or cancelled reader store nothing); ErrNotFound
// and ErrInvalidDigest; Delete and Walk; concurrent Puts of one blob and
// a concurrent mix of every call; the Stats counters, for a backend that
// is a cache.StatsReporter; streaming of a large blob in bounded memory;
// and, for a backend whose stored bytes can be damaged from outside
// (WithCorrupter), that a corrupt entry fails its Get with ErrCorrupt, is
// never served as good, is removed, and can be put again.
//
// The optional capabilities of package cache have suites of their own,
// which a backend runs when it has the capability, and which the tiers and
// buildcache.Open run on what they build from it, so that a composition is
// held to the same guarantees as its parts: RunRootIndex (roots recorded,
// looked up, replaced, updated atomically), RunLeaser (a collector keeps
// what a live lease names and nothing else; the harness brings the
// collector), RunDeferredSync (PutDeferred and SyncBlobs) and RunNoSpace
// (a byte budget fails with cache.ErrNoSpace and loses nothing).
//
// NewBlob, Digest and InvalidDigests serve a backend's own tests.
package cachetest
