package cachetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/buildcache/buildcache/cache"
)

func (s *suite) testRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 1<<20 + 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := s.newCache(t)
			b := NewBlob(uint64(n), n)
			put(t, c, b)
			size, err := c.Stat(ctxT(t), b.Digest)
			if err != nil || size != int64(n) {
				t.Fatalf("Stat = %d, %v; want %d, nil", size, err, n)
			}
			if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
				t.Fatalf("Get returned %d bytes that differ from the %d put", len(got), n)
			}
		})
	}
}

func (s *suite) testPutIdempotent(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(1, 10000)
	put(t, c, b)
	put(t, c, b)
	// A second Put of a stored blob may skip reading; if it does read, the
	// bytes are right, so it must succeed either way.
	if err := c.Put(ctxT(t), b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err != nil {
		t.Fatalf("third Put: %v", err)
	}
	if got := walkAll(t, c); len(got) != 1 || got[b.Digest] != int64(len(b.Data)) {
		t.Fatalf("Walk after 3 Puts of one blob = %v, want exactly that blob", got)
	}
	if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("content changed by repeated Put")
	}
}

func (s *suite) testPutWrongBytes(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(2, 5000)
	other := NewBlob(3, 5000)
	err := c.Put(ctxT(t), b.Digest, int64(len(other.Data)), bytes.NewReader(other.Data))
	if !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("Put of wrong bytes = %v, want ErrDigestMismatch", err)
	}
	expectAbsent(t, c, b.Digest)
	expectAbsent(t, c, other.Digest)
	// A stored blob is not harmed by a later bad Put of the same digest.
	put(t, c, b)
	err = c.Put(ctxT(t), b.Digest, int64(len(other.Data)), bytes.NewReader(other.Data))
	if err != nil && !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("bad Put over a stored blob = %v, want nil (skipped) or ErrDigestMismatch", err)
	}
	if got := mustGet(t, c, b.Digest); !bytes.Equal(got, b.Data) {
		t.Fatal("a bad Put damaged the stored blob")
	}
}

func (s *suite) testPutWrongSize(t *testing.T) {
	b := NewBlob(4, 5000)
	for _, size := range []int64{4999, 5001, 0, 1 << 40} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := s.newCache(t)
			err := c.Put(ctxT(t), b.Digest, size, bytes.NewReader(b.Data))
			if err == nil {
				t.Fatalf("Put with size %d of a %d-byte blob succeeded", size, len(b.Data))
			}
			if !errors.Is(err, cache.ErrDigestMismatch) && !errors.Is(err, cache.ErrNoSpace) {
				t.Fatalf("Put with wrong size = %v, want ErrDigestMismatch (or ErrNoSpace for an impossible size)", err)
			}
			expectAbsent(t, c, b.Digest)
		})
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func (s *suite) testPutReaderError(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(5, 100000)
	boom := errors.New("connection reset by test")
	err := c.Put(ctxT(t), b.Digest, int64(len(b.Data)), &failingReader{data: b.Data[:50000], err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("Put from a failing reader = %v, want the reader's error in the chain", err)
	}
	expectAbsent(t, c, b.Digest)
}

// cancellingReader yields half its data, cancels the context, then keeps
// yielding, so Put must notice the cancellation itself.
type cancellingReader struct {
	data   []byte
	half   int
	cancel context.CancelFunc
	sent   int
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	if r.sent >= len(r.data) {
		return 0, io.EOF
	}
	if r.sent >= r.half {
		r.cancel()
	}
	end := min(r.sent+len(p), len(r.data))
	if r.sent < r.half {
		end = min(end, r.half)
	}
	n := copy(p, r.data[r.sent:end])
	r.sent += n
	return n, nil
}

func (s *suite) testPutCancelledHalfway(t *testing.T) {
	c := s.newCache(t)
	b := NewBlob(6, 4<<20)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	err := c.Put(ctx, b.Digest, int64(len(b.Data)), &cancellingReader{data: b.Data, half: len(b.Data) / 2, cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put cancelled half-way = %v, want context.Canceled", err)
	}
	expectAbsent(t, c, b.Digest)

	// An already cancelled context stores nothing either.
	if err := c.Put(ctx, b.Digest, int64(len(b.Data)), bytes.NewReader(b.Data)); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	expectAbsent(t, c, b.Digest)
}
