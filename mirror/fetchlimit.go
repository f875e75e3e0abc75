package mirror

import (
	"context"
	"sync/atomic"
)

// DefaultMaxUpstreamFetches is how many blob downloads a Mirror runs at
// once unless WithMaxUpstreamFetches says otherwise.
const DefaultMaxUpstreamFetches = 32

// fetchLimit bounds the blob downloads in progress: each holds an
// upstream connection and two descriptors of its file, and the
// downloads beyond the bound wait in line, holding nothing but their
// clients' connections.
type fetchLimit struct {
	slots   chan struct{}
	running atomic.Int64
	waiting atomic.Int64
}

func newFetchLimit(n int) *fetchLimit {
	return &fetchLimit{slots: make(chan struct{}, n)}
}

// acquire waits for a free slot, or for ctx.
func (f *fetchLimit) acquire(ctx context.Context) error {
	select {
	case f.slots <- struct{}{}:
		f.running.Add(1)
		return nil
	default:
	}
	f.waiting.Add(1)
	defer f.waiting.Add(-1)
	select {
	case f.slots <- struct{}{}:
		f.running.Add(1)
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (f *fetchLimit) release() {
	f.running.Add(-1)
	<-f.slots
}
