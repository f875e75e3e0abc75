package tier

import "time"

// WithClock replaces time.Now, for tests of how long a far tier that is
// down is left alone.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		o.now = now
		return nil
	}
}
