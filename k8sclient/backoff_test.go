package k8sclient

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Every wait, jitter included, is within WithWatchBackoff's bounds; the
// waits double up to the longest, and start again at first after reset.
func TestBackoffWithinBounds(t *testing.T) {
	for _, tt := range []struct{ first, longest time.Duration }{
		{DefaultWatchRetry, DefaultWatchMaxGap},
		{time.Millisecond, time.Millisecond},
		{time.Second, 1500 * time.Millisecond},
		{20 * time.Second, 30 * time.Second},
	} {
		b := backoff{first: tt.first, longest: tt.longest, wait: tt.first}
		for i := range 1000 {
			if i%50 == 0 {
				b.reset()
				if d := b.next(); d < tt.first || d > min(tt.first*3/2, tt.longest) {
					t.Fatalf("%v..%v: first wait after reset = %v", tt.first, tt.longest, d)
				}
				continue
			}
			if d := b.next(); d < tt.first || d > tt.longest {
				t.Fatalf("%v..%v: wait %d = %v, outside the bounds", tt.first, tt.longest, i, d)
			}
		}
	}
}

// Which outcomes of a request say the API server is back (and wake the
// watches waiting out a backoff), and which failures of a watch mean that
// nothing answers (retried on the probe period).
func TestServerAnsweredAndUnreachable(t *testing.T) {
	gr := schema.GroupResource{Group: "batch", Resource: "jobs"}
	refused := fmt.Errorf("watch: %w", &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/apis", Err: &net.OpError{
		Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}})
	for _, tt := range []struct {
		name        string
		err         error
		answered    bool
		unreachable bool
	}{
		{"success", nil, true, false},
		{"404", apierrors.NewNotFound(gr, "x"), true, false},
		{"404, wrapped", wrapRequestError(apierrors.NewNotFound(gr, "x")), true, false},
		{"409", apierrors.NewConflict(gr, "x", errors.New("changed")), true, false},
		{"429", apierrors.NewTooManyRequests("slow down", 1), false, false},
		{"500", apierrors.NewInternalError(errors.New("etcd")), false, false},
		{"503", apierrors.NewServiceUnavailable("starting"), false, false},
		{"504", apierrors.NewTimeoutError("slow", 1), false, false},
		{"connection refused", refused, false, true},
		{"no route", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, false, true},
		{"i/o timeout", &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}, false, false},
		{"stream closed", errWatchClosed, false, false},
	} {
		if got := serverAnswered(tt.err); got != tt.answered {
			t.Errorf("%s: serverAnswered = %v", tt.name, got)
		}
		if got := unreachable(tt.err); got != tt.unreachable {
			t.Errorf("%s: unreachable = %v", tt.name, got)
		}
	}
}
