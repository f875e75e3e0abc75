// Package cachetest is the conformance suite that every cache.LayerCache
// backend runs. A backend's test is a few lines:
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
// The suite checks the rules of DESIGN.md that a caller can observe: round
// trips, idempotent and verified Puts, ErrNotFound and ErrInvalidDigest,
// concurrency, cancellation, Walk, streaming of large blobs in bounded
// memory, and, for backends that can be damaged from outside, that corrupt
// entries are detected, never served as good and removed.
package cachetest
