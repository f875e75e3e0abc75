package regclient

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/netfail"
)

// RemoteError is a registry's failure to answer: unreachable, timed out,
// or an HTTP status it should not have sent. It is what stale-if-error
// serves a cached copy through.
type RemoteError struct {
	Op     string // "HEAD manifest", "GET blob", ...
	URL    string
	Status int   // 0 when no response arrived; a refused redirect's own (3xx)
	Err    error // the transport error or the registry's error body
}

func (e *RemoteError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("registry: %s %s: %d %s: %v", e.Op, e.URL, e.Status, http.StatusText(e.Status), e.Err)
	}
	return fmt.Sprintf("registry: %s %s: %v", e.Op, e.URL, e.Err)
}

func (e *RemoteError) Unwrap() error { return e.Err }

// Temporary reports whether the failure is the registry's or the
// network's (unreachable or timed out, 5xx, 429) rather than the
// request's (404, 401) or a redirect the client refused (a loop, a
// file:// URL).
func (e *RemoteError) Temporary() bool {
	return e.Status == 0 || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// unreachable reports whether err is a registry that gave no answer at
// all (refused, reset, timed out, name not found, answer cut off): what
// the cache contract calls cache.ErrOffline. An HTTP status, a TLS error
// or a token server's refusal is an answer.
func unreachable(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Status == 0 && netfail.Unreachable(re.Err)
}

// MarkOffline wraps err in cache.ErrOffline when it is a *RemoteError of
// a registry that gave no answer at all (refused, reset, timed out, name
// not found, answer cut off), as the cache contract says; err stays in
// the chain for errors.As. Any other err is returned as it is.
func MarkOffline(err error) error {
	if unreachable(err) {
		return fmt.Errorf("%w: %w", cache.ErrOffline, err)
	}
	return err
}
