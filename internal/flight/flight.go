// Package flight runs identical concurrent work once. Unlike
// golang.org/x/sync/singleflight, the shared work has its own context that
// is cancelled only when every caller waiting for it has given up, so one
// impatient caller cannot fail the others, and work nobody waits for stops.
package flight

import (
	"context"
	"sync"
)

// Group deduplicates calls by key. The zero value is ready to use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
}

type call[V any] struct {
	done    chan struct{}
	val     V
	err     error
	waiters int
	cancel  context.CancelFunc
}

// Do runs fn once for all concurrent callers with the same key and returns
// its result to each. shared reports whether the caller joined a call
// another caller had started. A caller whose ctx ends stops waiting and gets
// ctx's error; fn's context is cancelled when all callers have stopped
// waiting. fn's context carries the first caller's values.
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func(context.Context) (V, error)) (v V, shared bool, err error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[K]*call[V]{}
	}
	c, ok := g.calls[key]
	if ok {
		c.waiters++
	} else {
		workCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call[V]{done: make(chan struct{}), waiters: 1, cancel: cancel}
		g.calls[key] = c
		go g.run(workCtx, key, c, fn)
	}
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.val, ok, c.err
	case <-ctx.Done():
		g.mu.Lock()
		if c.waiters--; c.waiters == 0 {
			c.cancel()
		}
		g.mu.Unlock()
		var zero V
		return zero, ok, context.Cause(ctx)
	}
}

func (g *Group[K, V]) run(ctx context.Context, key K, c *call[V], fn func(context.Context) (V, error)) {
	defer func() {
		if p := recover(); p != nil {
			g.finish(key, c)
			panic(p) // a panic in shared work is a bug: crash as fn would have
		}
	}()
	c.val, c.err = fn(ctx)
	g.finish(key, c)
}

func (g *Group[K, V]) finish(key K, c *call[V]) {
	g.mu.Lock()
	if g.calls[key] == c {
		delete(g.calls, key)
	}
	g.mu.Unlock()
	c.cancel()
	close(c.done)
}

// Forget makes the next Do for key start a new call even if one is in
// flight (for example after the key was invalidated).
func (g *Group[K, V]) Forget(key K) {
	g.mu.Lock()
	delete(g.calls, key)
	g.mu.Unlock()
}
