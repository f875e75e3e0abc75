package regclient

import (
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/buildcache/buildcache/cache"
)

// defaultRateLimitHold is how long a 429 without Retry-After or a stated
// reset holds pulls back.
const defaultRateLimitHold = time.Minute

// rateLimits keeps the last RateLimit of each registry ("host:port").
type rateLimits struct {
	now func() time.Time

	mu sync.Mutex
	by map[string]cache.RateLimit
}

func newRateLimits(now func() time.Time) *rateLimits {
	return &rateLimits{now: now, by: map[string]cache.RateLimit{}}
}

// observe records what resp says about host's budget.
func (l *rateLimits) observe(host string, resp *http.Response) {
	now := l.now()
	parsed, stated := parseRateLimit(resp.Header, now)
	tooMany := resp.StatusCode == http.StatusTooManyRequests
	if !stated && !tooMany {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	rl := l.by[host]
	if stated {
		parsed.RetryAfter = rl.RetryAfter
		rl = parsed
	}
	if tooMany {
		until := now.Add(defaultRateLimitHold)
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), now); ok {
			until = now.Add(d)
		} else if !rl.Reset.IsZero() && rl.Reset.After(now) {
			until = rl.Reset
		}
		rl.RetryAfter = until
	}
	rl.Updated = now
	l.by[host] = rl
}

func (l *rateLimits) get(host string) (cache.RateLimit, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rl, ok := l.by[host]
	return rl, ok
}

func (l *rateLimits) snapshot() map[string]cache.RateLimit {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.by) == 0 {
		return nil
	}
	return maps.Clone(l.by)
}

// parseRateLimit reads the rate-limit headers of a response: Docker Hub's
// and the IETF draft's RateLimit-Limit / RateLimit-Remaining /
// RateLimit-Reset (a number, optionally ";w=" a window in seconds, the
// first of a list being the one in force), and the later drafts'
// "RateLimit: limit=100, remaining=50, reset=30" or
// `RateLimit: "default";r=50;t=30` with `RateLimit-Policy: 100;w=3600` or
// `"default";q=100;w=3600`. It reports whether a remaining count was
// stated.
func parseRateLimit(h http.Header, now time.Time) (cache.RateLimit, bool) {
	var rl cache.RateLimit
	reset := -1
	if v := h.Get("RateLimit-Remaining"); v != "" {
		n, params, ok := firstItem(v)
		if !ok {
			return cache.RateLimit{}, false
		}
		rl.Remaining, rl.Stated = n, true
		rl.Window = window(params)
		if n, params, ok := firstItem(h.Get("RateLimit-Limit")); ok {
			rl.Limit = n
			rl.Window = cmpWindow(rl.Window, window(params))
		}
		if n, _, ok := firstItem(h.Get("RateLimit-Reset")); ok {
			reset = n
		}
	} else if v := h.Get("RateLimit"); v != "" {
		// The first value of each key wins: in a list of policies, the
		// first is the one in force.
		seen := map[string]bool{}
		for _, member := range strings.Split(v, ",") {
			for _, kv := range strings.Split(member, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
				n, err := strconv.Atoi(strings.TrimSpace(val))
				k = strings.ToLower(k)
				if err != nil || n < 0 || seen[k] {
					continue
				}
				seen[k] = true
				switch k {
				case "remaining", "r":
					rl.Remaining, rl.Stated = n, true
				case "limit":
					rl.Limit = n
				case "reset", "t":
					reset = n
				}
			}
		}
	}
	if !rl.Stated {
		return cache.RateLimit{}, false
	}
	if p := h.Get("RateLimit-Policy"); p != "" {
		first, _, _ := strings.Cut(p, ",")
		for i, tok := range strings.Split(first, ";") {
			k, val, hasEq := strings.Cut(strings.TrimSpace(tok), "=")
			n, err := strconv.Atoi(strings.TrimSpace(val))
			if !hasEq {
				n, err = strconv.Atoi(k)
			}
			if err != nil || n < 0 {
				continue
			}
			switch {
			case !hasEq && i == 0, strings.EqualFold(k, "q"):
				if rl.Limit == 0 {
					rl.Limit = n
				}
			case strings.EqualFold(k, "w"):
				rl.Window = cmpWindow(rl.Window, time.Duration(n)*time.Second)
			}
		}
	}
	if reset >= 0 {
		rl.Reset = now.Add(time.Duration(reset) * time.Second)
	}
	rl.Updated = now
	return rl, true
}

// firstItem parses the first member of a list like "100;w=21600, 10;w=1":
// its number and its parameters.
func firstItem(v string) (int, map[string]string, bool) {
	first, _, _ := strings.Cut(v, ",")
	parts := strings.Split(first, ";")
	n, err := strconv.Atoi(strings.TrimSpace(parts[0]))
	if err != nil || n < 0 {
		return 0, nil, false
	}
	params := map[string]string{}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		params[strings.ToLower(k)] = strings.TrimSpace(val)
	}
	return n, params, true
}

func window(params map[string]string) time.Duration {
	if s, err := strconv.Atoi(params["w"]); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// cmpWindow keeps the first window stated.
func cmpWindow(have, next time.Duration) time.Duration {
	if have != 0 {
		return have
	}
	return next
}

// RateLimit is the rate limit of registry host ("host:port",
// "index.docker.io") as its last response that stated one said, with the
// last 429 it answered; ok is false when none has.
func (c *Client) RateLimit(host string) (rl cache.RateLimit, ok bool) { return c.limits.get(host) }

// RateLimits is RateLimit for every registry that has stated one, nil
// when none has. The map is the caller's.
func (c *Client) RateLimits() map[string]cache.RateLimit { return c.limits.snapshot() }
