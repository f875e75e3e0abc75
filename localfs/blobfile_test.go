package localfs_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testclock"
	"github.com/buildcache/buildcache/localfs"
)

func TestCapabilityFileOpener(t *testing.T) {
	cachetest.RunFileOpener(t, func(t *testing.T) cache.LayerCache { return newStore(t) }, corrupt)
}

// send opens d and sends [off, off+n) of it to w.
func send(t *testing.T, s *localfs.Store, d v1.Hash, w io.Writer, off, n int64) error {
	t.Helper()
	bf, err := s.OpenFile(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	_, err = bf.SendRange(t.Context(), w, off, n)
	return err
}

// clockedBlob is a store on a manual clock holding a random blob.
func clockedBlob(t *testing.T, seed uint64, size int, opts ...localfs.Option) (*testclock.Clock, *localfs.Store, cachetest.Blob) {
	t.Helper()
	clock := newClock()
	s := newStore(t, append([]localfs.Option{localfs.WithClock(clock.Now)}, opts...)...)
	b := cachetest.NewBlob(seed, size)
	putBlob(t, s, b)
	return clock, s, b
}

// fileReaderFrom records what a copy into it reads from.
type fileReaderFrom struct {
	bytes.Buffer
	fromFile bool
}

func (w *fileReaderFrom) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		_, w.fromFile = lr.R.(*os.File)
	}
	return w.Buffer.ReadFrom(r)
}

// A send hands the destination the file itself, limited to the range:
// what net.TCPConn.ReadFrom (and so http.ResponseWriter's) sends with
// sendfile(2).
func TestSendRangeHandsOverTheFile(t *testing.T) {
	s := newStore(t)
	b := cachetest.NewBlob(1, 1<<20)
	putBlob(t, s, b)
	var w fileReaderFrom
	if err := send(t, s, b.Digest, &w, 100, 500000); err != nil {
		t.Fatal(err)
	}
	if !w.fromFile {
		t.Error("the destination's ReadFrom was not given an *io.LimitedReader of an *os.File: no sendfile")
	}
	if !bytes.Equal(w.Bytes(), b.Data[100:500100]) {
		t.Error("wrong bytes")
	}
}

// A blob verified moments ago, its file unchanged, is sent with no hash;
// once the record's time is up it is hashed again; with the record off,
// every send hashes.
func TestVerifiedRecord(t *testing.T) {
	const size = 1 << 20
	clock, s, b := clockedBlob(t, 2, size, localfs.WithVerifiedRecord(16, time.Minute))
	tail := func() {
		t.Helper()
		var out bytes.Buffer
		if err := send(t, s, b.Digest, &out, size-1, 1); err != nil || out.Len() != 1 || out.Bytes()[0] != b.Data[size-1] {
			t.Fatalf("tail: %q, %v", out.Bytes(), err)
		}
	}
	tail()
	if got := s.VerifiedBytes(); got != size {
		t.Fatalf("the first send hashed %d bytes, want the blob's %d", got, size)
	}
	for range 20 {
		tail()
	}
	if got := s.VerifiedBytes(); got != size {
		t.Fatalf("20 sends of a verified blob hashed %d bytes more", got-size)
	}
	if got := s.VerifiedHits(); got != 20 {
		t.Errorf("VerifiedHits = %d, want 20", got)
	}
	clock.Advance(time.Minute)
	tail()
	if got := s.VerifiedBytes(); got != 2*size {
		t.Fatalf("a send after the record's minute hashed %d bytes, want %d", got-size, size)
	}

	off := newStore(t, localfs.WithVerifiedRecord(0, 0))
	putBlob(t, off, b)
	for range 3 {
		if err := send(t, off, b.Digest, io.Discard, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	if got := off.VerifiedBytes(); got != 3*size {
		t.Fatalf("with the record off, 3 sends hashed %d bytes, want %d", got, 3*size)
	}
}

// A full Get records what it verified: a send after it hashes nothing.
func TestGetRecordsVerification(t *testing.T) {
	s := newStore(t)
	b := cachetest.NewBlob(3, 1<<20)
	putBlob(t, s, b)
	if got, err := readBlob(t, s, b.Digest); err != nil || !bytes.Equal(got, b.Data) {
		t.Fatal(err)
	}
	if err := send(t, s, b.Digest, io.Discard, 0, 10); err != nil {
		t.Fatal(err)
	}
	if got := s.VerifiedBytes(); got != 0 {
		t.Fatalf("a send after a full Get hashed %d bytes", got)
	}
}

// The store's own touches (the LRU clock, bumped by the reads of other
// clients) neither cut the sends in progress nor cost a hash; a change
// of the file by anyone else cuts them, removes nothing, and the next
// send verifies the file anew.
func TestSendAcrossTouches(t *testing.T) {
	const size = 1 << 20
	clock, s, b := clockedBlob(t, 4, size)
	if err := send(t, s, b.Digest, io.Discard, 0, size); err != nil {
		t.Fatal(err)
	}
	hashed := s.VerifiedBytes()

	first, err := s.OpenFile(t.Context(), b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	var wg sync.WaitGroup
	for i := range 8 { // other clients, each a second later: each touches the file
		clock.Advance(2 * time.Second)
		if i%2 == 0 {
			if _, err := readBlob(t, s, b.Digest); err != nil {
				t.Fatal(err)
			}
			continue
		}
		wg.Go(func() {
			if err := send(t, s, b.Digest, io.Discard, 0, size); err != nil {
				t.Errorf("a send while others touch: %v", err)
			}
		})
	}
	wg.Wait()
	var out bytes.Buffer
	if _, err := first.SendRange(t.Context(), &out, 0, size); err != nil || !bytes.Equal(out.Bytes(), b.Data) {
		t.Fatalf("a send opened before the store's touches: %v", err)
	}
	if got := s.VerifiedBytes(); got != hashed {
		t.Errorf("the store's touches cost %d hashed bytes", got-hashed)
	}

	second, err := s.OpenFile(t.Context(), b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	p := filepath.Join(s.Dir(), "blobs", "sha256", b.Digest.Hex)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil { // another process's touch, say
		t.Fatal(err)
	}
	out.Reset()
	if _, err := second.SendRange(t.Context(), &out, 0, size); err == nil || errors.Is(err, cache.ErrCorrupt) || out.Len() >= size {
		t.Fatalf("a send whose file changed under it: %d bytes, %v; want it cut, not corrupt", out.Len(), err)
	}
	if err := send(t, s, b.Digest, io.Discard, 0, size); err != nil {
		t.Fatalf("the next send: %v", err)
	}
	if got := s.VerifiedBytes(); got != hashed+size {
		t.Errorf("the next send hashed %d bytes, want the blob's %d", got-hashed, size)
	}
}

// Sends and touches at once, every open touching the file: no send is
// ever cut, as none of the changes is anyone else's.
func TestConcurrentSendsAndTouches(t *testing.T) {
	const size = 256 << 10
	clock, s, b := clockedBlob(t, 5, size)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				clock.Advance(2 * time.Second) // the next open's touch is due
				var out bytes.Buffer
				if err := send(t, s, b.Digest, &out, 0, size); err != nil || !bytes.Equal(out.Bytes(), b.Data) {
					t.Errorf("a send among touches: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// A damaged blob sent with sendfile to a TCP connection (its ReadFrom)
// stops short of its last byte, wherever the damage is.
func TestSendfileOfDamagedBlobStopsShort(t *testing.T) {
	const size = 4 << 20
	for _, how := range []cachetest.Corruption{cachetest.FlipByte, cachetest.Truncate} {
		t.Run(how.String(), func(t *testing.T) {
			s := newStore(t)
			b := cachetest.NewBlob(6, size)
			putBlob(t, s, b)
			corrupt(t, s, b.Digest, how)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			received := make(chan int, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					received <- -1
					return
				}
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				received <- int(n)
			}()
			conn, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			bf, err := s.OpenFile(t.Context(), b.Digest)
			if err != nil {
				t.Fatal(err)
			}
			_, err = bf.SendRange(t.Context(), conn, 0, bf.Size())
			bf.Close()
			conn.Close()
			if got := <-received; !errors.Is(err, cache.ErrCorrupt) || int64(got) >= bf.Size() {
				t.Fatalf("sent %d of %d bytes, %v; want fewer and ErrCorrupt", got, bf.Size(), err)
			}
		})
	}
}
