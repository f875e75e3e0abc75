package netfail

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

type connErr struct{ conn bool }

func (e connErr) Error() string         { return "send failed" }
func (e connErr) ConnectionError() bool { return e.conn }

func TestClassify(t *testing.T) {
	dial := &url.Error{Op: "Get", URL: "http://r/v2/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	unreach := &url.Error{Op: "Get", URL: "http://r/v2/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}}
	for _, tt := range []struct {
		name                   string
		err                    error
		unreachable, retryable bool
	}{
		{"nil", nil, false, false},
		{"refused", dial, true, true},
		{"network unreachable", unreach, true, false},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true, true},
		{"broken pipe", syscall.EPIPE, true, true},
		{"truncated", fmt.Errorf("body: %w", io.ErrUnexpectedEOF), true, true},
		{"closed before answering", &url.Error{Op: "Get", URL: "http://r", Err: io.EOF}, true, true},
		{"dns", &net.DNSError{Err: "no such host", Name: "nowhere.invalid", IsNotFound: true}, true, false},
		{"dns timeout", &net.DNSError{Err: "timeout", Name: "slow", IsTimeout: true}, true, true},
		{"sdk connection error", fmt.Errorf("op: %w", connErr{true}), true, false},
		{"sdk other send error", connErr{false}, false, false},
		{"tls", &url.Error{Op: "Get", URL: "https://r", Err: x509.UnknownAuthorityError{}}, false, false},
		{"an answer", errors.New("UNAUTHORIZED"), false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Unreachable(tt.err); got != tt.unreachable {
				t.Errorf("Unreachable(%v) = %v, want %v", tt.err, got, tt.unreachable)
			}
			if got := Retryable(tt.err); got != tt.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.retryable)
			}
		})
	}
}

func TestRealDial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = net.Dial("tcp", addr)
	if err == nil {
		t.Skip("something listens on the closed port")
	}
	if !Unreachable(err) || !Retryable(err) {
		t.Fatalf("dial to a closed port: %v: Unreachable %v, Retryable %v; want both", err, Unreachable(err), Retryable(err))
	}
}
