package testserver

import (
	"errors"
	"sync"
	"testing"
)

// launched is what the servers this package starts as processes have in
// common: what they logged, and a way to stop them.
type launched interface {
	Log() string
	Stop()
}

// mustLaunch returns what launch started, or ends the test: skipped when
// the server cannot exist here (failed under CI), failed otherwise.
func mustLaunch[S any](t testing.TB, s S, err error) S {
	t.Helper()
	if err != nil {
		if errors.Is(err, errUnavailable) {
			unavailable(t, err)
		}
		t.Fatal(err)
	}
	return s
}

// startForTest starts a server of the test's own with launch; it is
// stopped when the test ends, and its log printed (with where, say its
// directory) if the test failed.
func startForTest[S launched](t testing.TB, name string, where func(S) string, launch func() (S, error)) S {
	t.Helper()
	s, err := launch()
	s = mustLaunch(t, s, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log (%s):\n%s", name, where(s), s.Log())
		}
		s.Stop()
	})
	return s
}

// sharedServer is one server for every test of a test binary, started by
// the first test that asks; a failed start is remembered, not retried.
type sharedServer[S launched] struct {
	mu      sync.Mutex
	started bool
	s       S
	err     error
}

// get returns the shared server, starting it with launch the first time.
func (sh *sharedServer[S]) get(t testing.TB, launch func() (S, error)) S {
	t.Helper()
	sh.mu.Lock()
	if !sh.started {
		// A failure is remembered too: every test of the binary reports it.
		sh.s, sh.err = launch()
		sh.started = true
	}
	s, err := sh.s, sh.err
	sh.mu.Unlock()
	return mustLaunch(t, s, err)
}

// stop stops the shared server, if one was started, and forgets it.
func (sh *sharedServer[S]) stop() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.started && sh.err == nil {
		sh.s.Stop()
	}
	var zero S
	sh.started, sh.s, sh.err = false, zero, nil
}
