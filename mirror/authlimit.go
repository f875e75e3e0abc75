package mirror

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// clientKey is what failed logins are counted by: the client's IPv4
// address, or its IPv6 /64, the block one subscriber or one host
// typically gets, so that stepping through the addresses of a /64 does
// not buy more attempts. Addresses that do not parse (a Unix socket's)
// all share the zero prefix.
func clientKey(remoteAddr string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remoteAddr)
	addr := ap.Addr()
	if err != nil {
		if addr, err = netip.ParseAddr(remoteAddr); err != nil {
			return netip.Prefix{}
		}
	}
	addr = addr.Unmap().WithZone("")
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// failLimiter is a token bucket of failed logins per client: a client
// holds up to n attempts and gets n back per window, spread over it. A
// credential check takes an attempt before it runs (take) and gives it
// back if the credentials were good (settle), so one client's concurrent
// guesses are bound too, and a client that never fails is never tracked.
//
// At most max clients are tracked, the least recently charged dropped
// first: an attacker with more addresses than that gets a fresh bucket
// for some of them, and Auth's bound on concurrent checks is what holds
// then.
type failLimiter struct {
	n   float64 // attempts a bucket holds; 0: no limit
	per time.Duration
	max int

	mu      sync.Mutex
	clients map[netip.Prefix]*list.Element // of *bucket
	lru     list.List                      // front: charged last
}

type bucket struct {
	client netip.Prefix
	tokens float64
	held   int       // taken by checks still running
	at     time.Time // when tokens was last brought up to date
	warned bool      // the refusals since tokens ran out were logged
}

func newFailLimiter(n int, per time.Duration, max int) *failLimiter {
	return &failLimiter{n: float64(n), per: per, max: max, clients: map[netip.Prefix]*list.Element{}}
}

// refill brings b's tokens up to now; a clock going back adds none.
func (l *failLimiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.n, b.tokens+d.Seconds()*l.n/l.per.Seconds())
		b.at = now
	}
}

// wait is how long b has to wait for one attempt, rounded up to whole
// seconds (at least one) for Retry-After.
func (l *failLimiter) wait(b *bucket) time.Duration {
	d := time.Duration((1 - b.tokens) * float64(l.per) / l.n)
	return max(time.Second, (d + time.Second - 1).Truncate(time.Second))
}

// allows reports whether client has an attempt left, without taking it,
// counting those held by checks still running as left: a client that
// has none is refused before anything else is looked at, remembered
// credentials included, so that guesses from it cost nothing and learn
// nothing. When it has none, it also says how long to wait and whether
// this is the first refusal since it ran out (to log once).
func (l *failLimiter) allows(client netip.Prefix, now time.Time) (ok bool, wait time.Duration, first bool) {
	if l.n == 0 {
		return true, 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, tracked := l.clients[client]
	if !tracked {
		return true, 0, false
	}
	b := e.Value.(*bucket)
	l.refill(b, now)
	if b.tokens+float64(b.held) >= 1 {
		return true, 0, false
	}
	first = !b.warned
	b.warned = true
	return false, l.wait(b), first
}

// take takes one of client's attempts, tracking it if it was not. It
// fails, with the wait, when there is none left.
func (l *failLimiter) take(client netip.Prefix, now time.Time) (ok bool, wait time.Duration) {
	if l.n == 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, tracked := l.clients[client]
	if !tracked {
		if l.lru.Len() >= l.max {
			oldest := l.lru.Back()
			delete(l.clients, oldest.Value.(*bucket).client)
			l.lru.Remove(oldest)
		}
		e = l.lru.PushFront(&bucket{client: client, tokens: l.n, at: now})
		l.clients[client] = e
	}
	b := e.Value.(*bucket)
	l.refill(b, now)
	l.lru.MoveToFront(e)
	if b.tokens < 1 {
		return false, l.wait(b)
	}
	b.tokens--
	b.held++
	b.warned = false
	return true, 0
}

// settle ends the check an attempt take took was for: the attempt is
// given back if the check passed or did not run (failed false), spent
// otherwise. A full bucket says nothing: it is dropped.
func (l *failLimiter) settle(client netip.Prefix, failed bool, now time.Time) {
	if l.n == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, tracked := l.clients[client]
	if !tracked {
		return // dropped meanwhile
	}
	b := e.Value.(*bucket)
	b.held--
	if failed {
		return
	}
	l.refill(b, now)
	b.tokens = min(l.n, b.tokens+1)
	if b.tokens >= l.n && b.held == 0 {
		delete(l.clients, client)
		l.lru.Remove(e)
	}
}

// tracked is the number of clients tracked.
func (l *failLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// verifiedSet remembers credentials a Checker accepted, by an HMAC of
// them, until they expire: at most max, the expired dropped first when
// it is full, then any one.
type verifiedSet struct {
	ttl time.Duration // 0: nothing is remembered
	max int

	mu   sync.Mutex
	sums map[[32]byte]time.Time // -> when it expires
}

func (v *verifiedSet) has(sum [32]byte, now time.Time) bool {
	if v.ttl == 0 {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	exp, ok := v.sums[sum]
	if ok && !now.Before(exp) {
		delete(v.sums, sum)
		ok = false
	}
	return ok
}

func (v *verifiedSet) add(sum [32]byte, now time.Time) {
	if v.ttl == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.sums[sum]; !ok && len(v.sums) >= v.max {
		for s, exp := range v.sums {
			if !now.Before(exp) {
				delete(v.sums, s)
			}
		}
		for s := range v.sums {
			if len(v.sums) < v.max {
				break
			}
			delete(v.sums, s)
		}
	}
	v.sums[sum] = now.Add(v.ttl)
}

func (v *verifiedSet) len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.sums)
}
