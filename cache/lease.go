package cache

import "context"

// Leaser is implemented by stores whose collectors (eviction to make room,
// garbage collection, in this process or another sharing the store) must
// be kept from removing blobs that a job in progress has written or relies
// on but has not yet made reachable from a root: a pull, between its first
// blob and the root it records at its end. It is what containerd's leases
// and BuildKit's ingest do.
type Leaser interface {
	// Lease starts a lease and returns a context carrying it, and the
	// function that ends it. Every blob the store is asked about with
	// that context (Stat, Get, Put) is kept by every collector until
	// release is called or the process holding the lease exits, whichever
	// comes first. release may be called more than once.
	Lease(ctx context.Context) (leased context.Context, release func() error, err error)
}
