package mirror

import (
	"context"
	"errors"
	"net/http"
	"os"
	"sync"
	"syscall"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

// Why a response failed or was cut short: the reason= of its access log
// record (AccessLog) and the reason label of the mirror's failure
// counters (Stats, buildcache_mirror_failed_responses_total).
const (
	ReasonNotFound       = "not_found"       // the upstream has no such manifest or blob
	ReasonDenied         = "denied"          // the upstream refused the mirror's credentials
	ReasonUpstream       = "upstream"        // the upstream was unreachable, failed or broke off a download
	ReasonDigestMismatch = "digest_mismatch" // the upstream's bytes do not match their digest or size
	ReasonNoSpace        = "no_space"        // the store has no room for the blob
	ReasonClosed         = "closed"          // the mirror is shutting down
	ReasonClientGone     = "client_gone"     // the client left before its response was complete
	ReasonStalled        = "stalled"         // the client read nothing for WithStallTimeout
	ReasonCorrupt        = "corrupt"         // a stored blob does not match its digest
	ReasonInternal       = "internal"        // anything else: an I/O error of the store, a bug
	ReasonAborted        = "aborted"         // cut short for a reason not recorded
	ReasonUntrusted      = "untrusted"       // the trust policy refused the image a tag points to (403 DENIED)
)

// reasonOf classifies err, the failure of a fetch or of serving it.
func reasonOf(err error) string {
	var re *regclient.RemoteError
	switch {
	case errors.Is(err, cache.ErrUntrusted):
		return ReasonUntrusted
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonStalled // a write past the stall timeout
	case errors.Is(err, ErrClosed):
		return ReasonClosed
	case errors.Is(err, cache.ErrDigestMismatch):
		return ReasonDigestMismatch
	case errors.Is(err, cache.ErrNoSpace):
		return ReasonNoSpace
	case errors.Is(err, context.Canceled), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		return ReasonClientGone
	case errors.As(err, &re) && re.Status == http.StatusNotFound, errors.Is(err, cache.ErrNotFound):
		return ReasonNotFound
	case errors.As(err, &re) && (re.Status == http.StatusUnauthorized || re.Status == http.StatusForbidden):
		return ReasonDenied
	case errors.As(err, &re), errors.Is(err, cache.ErrOffline), errors.Is(err, errNoClients):
		return ReasonUpstream
	case errors.Is(err, cache.ErrCorrupt):
		return ReasonCorrupt
	}
	return ReasonInternal
}

// abortReason is why a response to a request whose context is ctx was
// cut by err: the client's leaving unless err says more.
func abortReason(ctx context.Context, err error) string {
	r := reasonOf(err)
	if ctx.Err() != nil && r == ReasonInternal {
		return ReasonClientGone
	}
	return r
}

// failureNoter is a ResponseWriter that wants to know why its response
// failed: the mirror's own (to count it) and AccessLog's (to log it).
type failureNoter interface {
	noteFailure(reason string, err error)
}

// noteFailure tells every writer in w's chain (through Unwrap) why the
// response failed.
func noteFailure(w http.ResponseWriter, reason string, err error) {
	for range maxUnwrapWriters {
		if n, ok := w.(failureNoter); ok {
			n.noteFailure(reason, err)
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

const maxUnwrapWriters = 16

// failureCounts counts failed responses by reason.
type failureCounts struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (f *failureCounts) add(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]uint64{}
	}
	f.n[reason]++
}

func (f *failureCounts) snapshot() map[string]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]uint64, len(f.n))
	for k, v := range f.n {
		out[k] = v
	}
	return out
}

// abort cuts the response short (the client never sees it complete),
// saying why first.
func abort(ctx context.Context, w http.ResponseWriter, err error) {
	noteFailure(w, abortReason(ctx, err), err)
	panic(http.ErrAbortHandler)
}
