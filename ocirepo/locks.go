package ocirepo

import (
	"context"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// digestLocks serialises Put, Delete and the removal of bad entries per
// digest within a process, so that a Delete cannot interleave with a Put of
// the same blob and leave an entry whose blob is gone.
type digestLocks struct {
	mu sync.Mutex
	m  map[v1.Hash]*digestLock
}

type digestLock struct {
	ch   chan struct{} // holds a token while locked
	refs int           // holders and waiters
}

func (l *digestLocks) lock(ctx context.Context, d v1.Hash) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[v1.Hash]*digestLock{}
	}
	e := l.m[d]
	if e == nil {
		e = &digestLock{ch: make(chan struct{}, 1)}
		l.m[d] = e
	}
	e.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, d)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, context.Cause(ctx)
	}
}
