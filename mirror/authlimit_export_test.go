package mirror

import (
	"sync/atomic"
	"time"
)

// Hooks for the tests of Auth in package mirror_test.

// SetAuthClock makes a read the time from now; call it before serving.
func SetAuthClock(a *Auth, now func() time.Time) { a.now = now }

// SetAuthBounds sets how many clients a tracks, how many credentials it
// remembers and how many requests may wait for a check; call it before
// serving.
func SetAuthBounds(a *Auth, clients, verified, waiting int) {
	a.failures.max = clients
	a.verified.max = verified
	a.maxWait = int64(waiting)
}

// AuthSizes reports how many clients a tracks and how many credentials
// it remembers.
func AuthSizes(a *Auth) (clients, verified int) {
	return a.failures.tracked(), a.verified.len()
}

// CountBcrypt counts the bcrypt comparisons h makes from now on; call it
// before h is used.
func CountBcrypt(h *Htpasswd) *atomic.Int64 {
	n := new(atomic.Int64)
	compare := h.compare
	h.compare = func(hash, password []byte) error {
		n.Add(1)
		return compare(hash, password)
	}
	return n
}
