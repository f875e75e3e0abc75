package regclient

import (
	"net/http"
	"testing"
	"time"

	"github.com/buildcache/buildcache/cache"
)

func TestParseRateLimit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   cache.RateLimit
		stated bool
	}{
		{"docker hub", map[string]string{"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"},
			cache.RateLimit{Limit: 100, Remaining: 76, Window: 6 * time.Hour}, true},
		{"draft-00 with reset and a list", map[string]string{"RateLimit-Limit": "10, 10;w=1, 1000;w=3600", "RateLimit-Remaining": "9", "RateLimit-Reset": "30"},
			cache.RateLimit{Limit: 10, Remaining: 9, Reset: now.Add(30 * time.Second)}, true},
		{"draft dictionary with policy", map[string]string{"RateLimit": "limit=100, remaining=50, reset=30", "RateLimit-Policy": "100;w=3600"},
			cache.RateLimit{Limit: 100, Remaining: 50, Window: time.Hour, Reset: now.Add(30 * time.Second)}, true},
		{"later draft, named policy", map[string]string{"RateLimit": `"default";r=5;t=10`, "RateLimit-Policy": `"default";q=100;w=60`},
			cache.RateLimit{Limit: 100, Remaining: 5, Window: time.Minute, Reset: now.Add(10 * time.Second)}, true},
		{"none", map[string]string{}, cache.RateLimit{}, false},
		{"garbage", map[string]string{"RateLimit-Remaining": "lots"}, cache.RateLimit{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			got, stated := parseRateLimit(h, now)
			if stated != tc.stated {
				t.Fatalf("stated = %v, want %v", stated, tc.stated)
			}
			if !stated {
				return
			}
			tc.want.Stated, tc.want.Updated = true, now
			if got != tc.want {
				t.Errorf("parseRateLimit = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRateLimitsObserve429(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newRateLimits(func() time.Time { return now })
	l.observe("r", &http.Response{StatusCode: 200, Header: http.Header{"Ratelimit-Remaining": {"3"}, "Ratelimit-Reset": {"120"}}})
	l.observe("r", &http.Response{StatusCode: 429, Header: http.Header{}})
	rl, _ := l.get("r")
	if !rl.RetryAfter.Equal(now.Add(2*time.Minute)) || rl.Remaining != 3 {
		t.Errorf("a 429 without Retry-After: %+v; want RetryAfter at the stated reset", rl)
	}
	l.observe("r", &http.Response{StatusCode: 200, Header: http.Header{"Ratelimit-Remaining": {"7"}}})
	if rl, _ = l.get("r"); rl.Remaining != 7 || !rl.RetryAfter.Equal(now.Add(2*time.Minute)) {
		t.Errorf("a later answer: %+v; want remaining 7 and the 429's RetryAfter kept", rl)
	}
	snap := l.snapshot()
	snap["r"] = cache.RateLimit{}
	if rl, _ = l.get("r"); rl.Remaining != 7 {
		t.Error("a snapshot shares its map with the tracker")
	}
}
