package k8sclient

import (
	"testing"
	"time"
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
