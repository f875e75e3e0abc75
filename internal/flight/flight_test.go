package flight

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestDoRunsOnceForConcurrentCallers(t *testing.T) {
	var g Group[string, int]
	var calls atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	results := make([]int, 64)
	var sharedCount atomic.Int32
	for i := range results {
		wg.Go(func() {
			v, shared, err := g.Do(t.Context(), "k", func(context.Context) (int, error) {
				calls.Add(1)
				close(started)
				<-release
				return 42, nil
			})
			if err != nil {
				t.Error(err)
			}
			if shared {
				sharedCount.Add(1)
			}
			results[i] = v
		})
	}
	<-started
	// Wait until all 64 have joined before releasing the work.
	for {
		g.mu.Lock()
		n := g.calls["k"].waiters
		g.mu.Unlock()
		if n == 64 {
			break
		}
	}
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("fn ran %d times, want 1", calls.Load())
	}
	if sharedCount.Load() != 63 {
		t.Fatalf("%d callers shared, want 63", sharedCount.Load())
	}
	for _, v := range results {
		if v != 42 {
			t.Fatalf("a caller got %d", v)
		}
	}
}

func TestOneCallerCancellingDoesNotFailOthers(t *testing.T) {
	var g Group[string, int]
	release := make(chan struct{})
	started := make(chan struct{})
	impatient, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, _, err := g.Do(impatient, "k", func(ctx context.Context) (int, error) {
			close(started)
			select {
			case <-release:
				return 7, nil
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		})
		errc <- err
	}()
	<-started
	patient := make(chan int, 1)
	go func() {
		v, _, _ := g.Do(t.Context(), "k", func(context.Context) (int, error) { return -1, nil })
		patient <- v
	}()
	for {
		g.mu.Lock()
		n := g.calls["k"].waiters
		g.mu.Unlock()
		if n == 2 {
			break
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("impatient caller got %v, want context.Canceled", err)
	}
	close(release)
	if v := <-patient; v != 7 {
		t.Fatalf("patient caller got %d, want the shared result 7", v)
	}
}

func TestWorkIsCancelledWhenEveryoneLeaves(t *testing.T) {
	var g Group[string, int]
	ctx, cancel := context.WithCancel(t.Context())
	workDone := make(chan error, 1)
	started := make(chan struct{})
	go g.Do(ctx, "k", func(ctx context.Context) (int, error) {
		close(started)
		<-ctx.Done()
		workDone <- ctx.Err()
		return 0, ctx.Err()
	})
	<-started
	cancel()
	if err := <-workDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("work saw %v, want cancellation once nobody waits", err)
	}
}

// waitersOf spins until key's current call has n waiters.
func waitersOf[K comparable, V any](g *Group[K, V], key K, n int) {
	for {
		g.mu.Lock()
		c := g.calls[key]
		got := 0
		if c != nil {
			got = c.waiters
		}
		g.mu.Unlock()
		if got == n {
			return
		}
		runtime.Gosched()
	}
}

func TestPanicReachesEveryWaiter(t *testing.T) {
	var g Group[string, int]
	boom := errors.New("boom")
	release := make(chan struct{})
	recovered := make(chan any, 2)
	for range 2 {
		go func() {
			defer func() { recovered <- recover() }()
			g.Do(t.Context(), "k", func(context.Context) (int, error) {
				<-release
				panic(boom)
			})
		}()
	}
	waitersOf(&g, "k", 2)
	close(release)
	for range 2 {
		r := <-recovered
		pe, ok := r.(*PanicError)
		if !ok {
			t.Fatalf("a waiter recovered %#v, want a *PanicError", r)
		}
		if pe.Value != boom || !errors.Is(pe, boom) {
			t.Errorf("PanicError carries %v, want %v", pe.Value, boom)
		}
		if !strings.Contains(pe.Error(), "panicked: boom") || !strings.Contains(string(pe.Stack), "flight_test.go") {
			t.Errorf("PanicError lacks the value or the work's stack:\n%s", pe.Error())
		}
	}
	if v, _, err := g.Do(t.Context(), "k", func(context.Context) (int, error) { return 1, nil }); v != 1 || err != nil {
		t.Fatalf("Do after a panic = %d, %v; want a new call", v, err)
	}
}

func TestPanicInPublishIsThePanicOfTheWork(t *testing.T) {
	var g Group[string, int]
	defer func() {
		if _, ok := recover().(*PanicError); !ok {
			t.Fatal("a panic in Publish did not reach the caller as a *PanicError")
		}
	}()
	g.Run(t.Context(), "k", Work[int]{
		Fn:      func(context.Context) (int, error) { return 1, nil },
		Publish: func(int, error, func() bool) { panic("publish") },
	})
	t.Fatal("Run returned")
}

func TestGoexitIsAnError(t *testing.T) {
	var g Group[string, int]
	published := false
	r := g.Run(t.Context(), "k", Work[int]{
		Fn:      func(context.Context) (int, error) { runtime.Goexit(); return 1, nil },
		Publish: func(int, error, func() bool) { published = true },
	})
	if r.Err != ErrGoexit || r.Val != 0 || r.Left {
		t.Fatalf("Run with Goexit = %+v, want ErrGoexit", r)
	}
	if published {
		t.Error("Publish ran for work that called Goexit")
	}
	if v, _, err := g.Do(t.Context(), "k", func(context.Context) (int, error) { return 2, nil }); v != 2 || err != nil {
		t.Fatalf("Do after Goexit = %d, %v; want a new call", v, err)
	}
}

// TestSupersedeAndForget: a newer call supersedes an older one, whose
// callers still get its result, but whose Publish learns it is stale.
func TestSupersedeAndForget(t *testing.T) {
	for _, tc := range []struct {
		name     string
		overtake func(g *Group[string, string])
	}{
		{"Supersede", func(g *Group[string, string]) {
			g.Run(context.Background(), "k", Work[string]{
				Fn:        func(context.Context) (string, error) { return "new", nil },
				Supersede: true,
			})
		}},
		{"Forget", func(g *Group[string, string]) { g.Forget("k") }},
		{"ForgetAll", func(g *Group[string, string]) { g.ForgetAll() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g Group[string, string]
			release := make(chan struct{})
			current := make(chan bool, 1)
			old := make(chan Result[string], 1)
			go func() {
				old <- g.Run(t.Context(), "k", Work[string]{
					Fn: func(context.Context) (string, error) { <-release; return "old", nil },
					Publish: func(v string, err error, cur func() bool) {
						current <- cur()
					},
				})
			}()
			waitersOf(&g, "k", 1)
			tc.overtake(&g)
			// The old call is no longer the one a Do joins.
			if v, _, _ := g.Do(t.Context(), "k", func(context.Context) (string, error) { return "next", nil }); v != "next" {
				t.Fatalf("a Do after %s joined the old call", tc.name)
			}
			close(release)
			if r := <-old; r.Val != "old" || r.Err != nil {
				t.Fatalf("the old call's caller got %+v, want its own result", r)
			}
			if <-current {
				t.Errorf("after %s the old call's Publish saw it current", tc.name)
			}
		})
	}

	t.Run("a call nobody overtook is current", func(t *testing.T) {
		var g Group[string, int]
		var cur bool
		g.Run(t.Context(), "k", Work[int]{
			Fn:      func(context.Context) (int, error) { return 1, nil },
			Publish: func(_ int, _ error, current func() bool) { cur = current() },
		})
		if !cur {
			t.Error("Publish saw its own call stale")
		}
	})
}

// TestAbandonedCallIsDetached: once every caller has left, the work's
// context ends with ErrAbandoned, a later caller starts a new call, and the
// abandoned call's Publish learns it is stale.
func TestAbandonedCallIsDetached(t *testing.T) {
	var g Group[string, string]
	ctx, cancel := context.WithCancel(t.Context())
	workCtx := make(chan context.Context, 1)
	current := make(chan bool, 1)
	left := make(chan Result[string], 1)
	go func() {
		left <- g.Run(ctx, "k", Work[string]{
			Fn: func(ctx context.Context) (string, error) {
				workCtx <- ctx
				<-ctx.Done()
				return "late", nil
			},
			Publish: func(_ string, _ error, cur func() bool) { current <- cur() },
		})
	}()
	wctx := <-workCtx
	cancel()
	if r := <-left; !r.Left || !errors.Is(r.Err, context.Canceled) || r.Val != "" {
		t.Fatalf("the caller that left got %+v", r)
	}
	<-wctx.Done()
	if cause := context.Cause(wctx); cause != ErrAbandoned {
		t.Errorf("the work's cause = %v, want ErrAbandoned", cause)
	}
	if <-current {
		t.Error("an abandoned call's Publish saw it current")
	}
	if v, shared, err := g.Do(t.Context(), "k", func(context.Context) (string, error) { return "fresh", nil }); v != "fresh" || shared || err != nil {
		t.Fatalf("Do after abandonment = %q, shared %v, %v; want a new call", v, shared, err)
	}
}

func TestJoinedIsCalledForSharedCallsOnly(t *testing.T) {
	var g Group[string, int]
	var joined atomic.Int32
	release := make(chan struct{})
	w := Work[int]{
		Fn:     func(context.Context) (int, error) { <-release; return 1, nil },
		Joined: func() { joined.Add(1) },
	}
	results := make(chan Result[int], 3)
	for range 3 {
		go func() { results <- g.Run(t.Context(), "k", w) }()
	}
	waitersOf(&g, "k", 3)
	if n := joined.Load(); n != 2 {
		t.Fatalf("Joined called %d times before the work ended, want 2", n)
	}
	close(release)
	shared := 0
	for range 3 {
		if r := <-results; r.Shared {
			shared++
		}
	}
	if shared != 2 {
		t.Fatalf("%d results shared, want 2", shared)
	}
}
