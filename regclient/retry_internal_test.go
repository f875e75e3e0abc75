package regclient

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// A 429 or 5xx is tried again after what its Retry-After says (within
// the longest wait), else after the backoff, doubling; a Retry-After
// beyond the longest wait is not waited for, a 5xx's no more than a
// 429's.
func TestRetryWaits(t *testing.T) {
	for _, tt := range []struct {
		name       string
		status     int
		retryAfter string
		want       []time.Duration // the waits; the request succeeds after them unless wantStatus
		wantStatus int
	}{
		{"429 with Retry-After", http.StatusTooManyRequests, "1", []time.Duration{time.Second, time.Second}, 0},
		{"503 without", http.StatusServiceUnavailable, "", []time.Duration{time.Millisecond, 2 * time.Millisecond}, 0},
		{"Retry-After beyond the longest wait", http.StatusTooManyRequests, "3600", nil, http.StatusTooManyRequests},
		// A 5xx's Retry-After is the registry's word as much as a 429's
		// (issue 19, item 3: a 503 with Retry-After 60 cost 30 s a request).
		{"503 with Retry-After beyond the longest wait", http.StatusServiceUnavailable, "60", nil, http.StatusServiceUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) <= 2 {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					w.WriteHeader(tt.status)
					return
				}
				w.WriteHeader(http.StatusOK)
			}))
			defer srv.Close()
			var waits []time.Duration
			c, err := New(WithRetry(3, time.Millisecond, 5*time.Second), withSleep(func(_ context.Context, d time.Duration) error {
				waits = append(waits, d)
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			repo, _ := name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/app")
			resp, err := c.Do(t.Context(), Request{Method: http.MethodGet, Repo: repo, Kind: "blobs", Ref: "x"})
			if tt.wantStatus != 0 {
				re, ok := err.(*RemoteError)
				if !ok || re.Status != tt.wantStatus {
					t.Fatalf("Do = %v, want a RemoteError with status %d", err, tt.wantStatus)
				}
			} else if err != nil {
				t.Fatal(err)
			} else {
				Drain(resp)
			}
			if len(waits) != len(tt.want) {
				t.Fatalf("waits %v, want %v", waits, tt.want)
			}
			for i := range waits {
				if waits[i] != tt.want[i] {
					t.Errorf("waits %v, want %v", waits, tt.want)
				}
			}
		})
	}
}
