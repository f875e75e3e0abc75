// Package flight runs identical concurrent work once. Unlike
// golang.org/x/sync/singleflight, the shared work has its own context that
// is cancelled only when every caller waiting for it has given up, so one
// impatient caller cannot fail the others, and work nobody waits for stops.
//
// # Panics and runtime.Goexit
//
// The work runs on a goroutine of its own, where a panic would crash the
// process with nobody able to recover it. So a panic in the work is
// recovered there and every caller waiting for it panics in turn, in its
// own goroutine, with a *PanicError that holds the original value and the
// work's stack: a bug stays a bug (it is not turned into an error that a
// cache would treat as a miss), but the caller may recover it. Work that
// calls runtime.Goexit (t.FailNow in a test, say) returns ErrGoexit to its
// callers. Either way the call is over and the next caller starts anew.
//
// # Supersession
//
// Run with Work.Supersede starts a new call even if one is in flight, and
// Forget and ForgetAll detach the calls in flight; either way the older call
// is no longer current. Its callers still get its result, but Work.Publish
// learns that it is stale, so a cache never writes back a result that an
// invalidation or a newer load has overtaken.
package flight

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
)

// ErrAbandoned is the cause of the work's context when every caller
// waiting for it has stopped waiting.
var ErrAbandoned = errors.New("flight: every caller waiting for this work has gone")

// ErrGoexit is the result of work that called runtime.Goexit.
var ErrGoexit = errors.New("flight: shared work called runtime.Goexit")

// PanicError is what the callers of work that panicked panic with.
type PanicError struct {
	Value any    // what the work panicked with
	Stack []byte // the work's goroutine stack when it panicked
}

func (p *PanicError) Error() string {
	return fmt.Sprintf("flight: shared work panicked: %v\n\n%s", p.Value, p.Stack)
}

// Unwrap returns the panic value if it is an error.
func (p *PanicError) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// Group deduplicates calls by key. The zero value is ready to use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V] // the current call of each key
}

// Work is what Run is asked to do. Only Fn is required.
type Work[V any] struct {
	// Fn computes the value, on a goroutine of its own, with a context that
	// carries the values of the starting caller's ctx but ends only when
	// every caller has stopped waiting (cause ErrAbandoned) or Fn's call
	// is over.
	Fn func(context.Context) (V, error)

	// Publish, if set, runs on Fn's goroutine after Fn has returned and
	// before any caller gets the result: the place to store it where later
	// callers will look. current reports whether the call is still the one
	// Run would join for its key: not superseded, forgotten or abandoned
	// since it started. Checking current and storing under a lock that the
	// code calling Forget also holds makes "no stale write-back" exact.
	// Once Fn has returned, callers leaving no longer abandon the call.
	// Publish is not called if Fn panicked or called runtime.Goexit; a
	// panic in Publish is treated as one in Fn.
	Publish func(v V, err error, current func() bool)

	// Supersede starts a new call even if one for the key is in flight:
	// the older call's callers still get its result, but it is no longer
	// current, and later callers join the new call.
	Supersede bool

	// Joined, if set, is called when the caller joins a call that another
	// caller started, before it waits (for statistics).
	Joined func()
}

// Result is what Run returns.
type Result[V any] struct {
	Val    V
	Err    error // Fn's error, or context.Cause(ctx) if Left
	Shared bool  // the caller joined a call another caller had started
	Left   bool  // ctx ended before the call did: Val is the zero value
}

type call[V any] struct {
	done   chan struct{}
	cancel context.CancelCauseFunc

	// Guarded by Group.mu.
	waiters  int  // callers still waiting
	stale    bool // superseded, forgotten or abandoned
	finished bool // Fn has returned

	// Written before done is closed, read after.
	val   V
	err   error
	panic *PanicError
}

// Do runs fn once for all concurrent callers with the same key and returns
// its result to each. shared reports whether the caller joined a call
// another caller had started. A caller whose ctx ends stops waiting and gets
// context.Cause(ctx); fn's context is cancelled when all callers have
// stopped waiting, and a later Do starts a new call. fn's context carries
// the first caller's values. If fn panics, every caller waiting panics with
// a *PanicError (see the package doc).
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func(context.Context) (V, error)) (v V, shared bool, err error) {
	r := g.Run(ctx, key, Work[V]{Fn: fn})
	return r.Val, r.Shared, r.Err
}

// Run is Do with the choices of w: it joins the current call of key, or
// starts one if there is none or w.Supersede is set, and waits for it or
// for ctx, whichever ends first; if both have, it prefers the result.
func (g *Group[K, V]) Run(ctx context.Context, key K, w Work[V]) Result[V] {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[K]*call[V]{}
	}
	c, ok := g.calls[key]
	shared := ok && !w.Supersede
	if shared {
		c.waiters++
	} else {
		if ok {
			c.stale = true
		}
		workCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
		c = &call[V]{done: make(chan struct{}), cancel: cancel, waiters: 1}
		g.calls[key] = c
		go g.run(workCtx, key, c, w)
	}
	g.mu.Unlock()
	if shared && w.Joined != nil {
		w.Joined()
	}

	select {
	case <-c.done:
		return c.result(shared)
	case <-ctx.Done():
	}
	select {
	case <-c.done:
		return c.result(shared)
	default:
	}
	g.mu.Lock()
	c.waiters--
	abandon := c.waiters == 0 && !c.finished
	if abandon {
		g.detachLocked(key, c)
	}
	g.mu.Unlock()
	if abandon {
		c.cancel(ErrAbandoned)
	}
	return Result[V]{Err: context.Cause(ctx), Shared: shared, Left: true}
}

func (c *call[V]) result(shared bool) Result[V] {
	if c.panic != nil {
		panic(c.panic)
	}
	return Result[V]{Val: c.val, Err: c.err, Shared: shared}
}

func (g *Group[K, V]) run(ctx context.Context, key K, c *call[V], w Work[V]) {
	returned := false
	defer func() {
		if !returned {
			if p := recover(); p != nil {
				c.panic = &PanicError{Value: p, Stack: debug.Stack()}
			} else {
				var zero V
				c.val, c.err = zero, ErrGoexit
			}
		}
		g.mu.Lock()
		c.finished = true
		if g.calls[key] == c {
			delete(g.calls, key)
		}
		g.mu.Unlock()
		c.cancel(nil)
		close(c.done)
	}()
	v, err := w.Fn(ctx)
	g.mu.Lock()
	c.finished = true
	g.mu.Unlock()
	if w.Publish != nil {
		w.Publish(v, err, func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			return !c.stale
		})
	}
	c.val, c.err = v, err
	returned = true
}

// Forget makes the next Do for key start a new call even if one is in
// flight (for example after the key was invalidated). The call in flight
// goes on for its callers, but is no longer current (see Work.Publish).
func (g *Group[K, V]) Forget(key K) {
	g.mu.Lock()
	if c, ok := g.calls[key]; ok {
		g.detachLocked(key, c)
	}
	g.mu.Unlock()
}

// ForgetAll is Forget of every key.
func (g *Group[K, V]) ForgetAll() {
	g.mu.Lock()
	for key, c := range g.calls {
		g.detachLocked(key, c)
	}
	g.mu.Unlock()
}

func (g *Group[K, V]) detachLocked(key K, c *call[V]) {
	c.stale = true
	if g.calls[key] == c {
		delete(g.calls, key)
	}
}
