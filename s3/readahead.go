package s3

import (
	"errors"
	"io"
	"sync"
)

// readahead reads its source on a goroutine of its own into a few
// buffers, so that the network read of the next chunk overlaps with the
// caller hashing (and using) this one: a verified Get then costs about as
// much wall time as an unverified one, rather than the sum of reading and
// hashing.
type readahead struct {
	src  io.ReadCloser
	full chan chunk
	free chan *[]byte
	stop chan struct{}
	done chan struct{}

	cur  chunk
	off  int
	once sync.Once
}

type chunk struct {
	buf *[]byte
	n   int
	err error
}

const (
	readaheadBufs = 3
	readaheadSize = 256 << 10
)

var readaheadPool = sync.Pool{New: func() any { b := make([]byte, readaheadSize); return &b }}

func newReadahead(src io.ReadCloser) *readahead {
	ra := &readahead{
		src:  src,
		full: make(chan chunk, readaheadBufs),
		free: make(chan *[]byte, readaheadBufs),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for range readaheadBufs {
		ra.free <- readaheadPool.Get().(*[]byte)
	}
	go ra.loop()
	return ra
}

func (ra *readahead) loop() {
	defer close(ra.done)
	for {
		var b *[]byte
		select {
		case b = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(ra.src, *b)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		select {
		case ra.full <- chunk{buf: b, n: n, err: err}:
		case <-ra.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

func (ra *readahead) Read(p []byte) (int, error) {
	for ra.cur.buf == nil || ra.off >= ra.cur.n {
		if ra.cur.err != nil {
			return 0, ra.cur.err
		}
		if ra.cur.buf != nil {
			ra.free <- ra.cur.buf
		}
		ra.cur, ra.off = <-ra.full, 0
	}
	n := copy(p, (*ra.cur.buf)[ra.off:ra.cur.n])
	ra.off += n
	return n, nil
}

// Close closes the source, which ends a read in progress, and waits for
// the goroutine to finish.
func (ra *readahead) Close() error {
	err := ra.src.Close()
	ra.once.Do(func() {
		close(ra.stop)
		<-ra.done
		// The goroutine is gone; give its buffers back.
		if ra.cur.buf != nil {
			readaheadPool.Put(ra.cur.buf)
			ra.cur.buf = nil
		}
		for {
			select {
			case c := <-ra.full:
				readaheadPool.Put(c.buf)
			case b := <-ra.free:
				readaheadPool.Put(b)
			default:
				return
			}
		}
	})
	return err
}
