// Package netfail classifies network failures the same way for every
// backend: whether any answer came back (Unreachable) and whether trying
// again may help (Retryable). An HTTP status, a TLS certificate error or a
// token server's refusal is an answer; a refused or reset connection, a
// failed name lookup, a timeout or a cut-off response is not.
//
// A context's own end is the caller's, not the network's: callers check
// their context before asking.
package netfail

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// Retryable reports whether err is a transient failure of the connection
// worth another try: refused, reset, a broken pipe, a timeout, or a
// response cut off. A failed name lookup or a TLS error is configuration,
// which trying again does not fix.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// Unreachable reports whether err means no answer came: everything
// Retryable, any failed dial or socket operation (*net.OpError), a failed
// name lookup (*net.DNSError), and errors that say so themselves with a
// ConnectionError() bool method (the AWS SDK's).
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var op *net.OpError
	var dns *net.DNSError
	var ce interface{ ConnectionError() bool }
	return Retryable(err) || errors.As(err, &op) || errors.As(err, &dns) ||
		(errors.As(err, &ce) && ce.ConnectionError())
}
