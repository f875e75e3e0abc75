// Package ctxio makes blocking streams and waits respect a context.
package ctxio

import (
	"context"
	"io"
	"time"
)

// Reader returns a reader that fails with ctx's error once ctx is done,
// checked before every Read, so a long copy stops within one buffer of a
// cancellation.
func Reader(ctx context.Context, r io.Reader) io.Reader {
	if ctx.Done() == nil {
		return r // context.Background and friends can never be cancelled
	}
	return &reader{ctx: ctx, r: r}
}

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, context.Cause(r.ctx)
	}
	return r.r.Read(p)
}

// Sleep waits d, or until ctx is done, and then returns ctx's cause.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
