package flight

import (
	"context"
	"errors"
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
