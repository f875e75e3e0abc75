package testserver

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
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

// proc is a daemon a test started (containerd, dockerd, buildkitd): its
// command, its end and its output.
type proc struct {
	name   string // for messages: "containerd"
	cmd    *exec.Cmd
	exited chan error // cmd.Wait's result; whoever receives it puts it back
	log    *LockedBuffer
	once   sync.Once
}

// startProc starts bin with args, its output in a log of its own.
func startProc(name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(bin, args...), exited: make(chan error, 1), log: &LockedBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

// Log is what the daemon printed so far.
func (p *proc) Log() string { return p.log.String() }

// waitReady calls ready until it returns nil, every 20 ms, giving each
// call a context ending at the deadline; it fails when the daemon exits,
// or with ready's last error once timeout has passed.
func (p *proc) waitReady(timeout time.Duration, where string, ready func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("%s exited before answering on %s: %v", p.name, where, err)
		default:
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := ready(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s within %s: %w", p.name, where, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the daemon once: SIGTERM, SIGKILL after grace, then
// cleanup (its directories). Later calls do nothing.
func (p *proc) stop(grace time.Duration, cleanup func()) {
	p.once.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(grace):
			p.cmd.Process.Kill()
			<-p.exited
		}
		cleanup()
	})
}
