package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

// serveStoredBlob answers a request for blob d, stored, whole or one
// range of it. No response of it is ever complete unless the whole blob
// matched its digest: from a store that keeps files (cache.FileOpener:
// localfs, a tier over one) the bytes go from the file to the connection,
// and the last one only once the store has verified the file (its record
// of a recent hash of the same, unchanged file, or a hash alongside the
// send); from
// any other store (a tier's far tier), through its verifying Get, the
// range's last byte waits until the whole blob has been read and matched.
// A mismatch removes the entry either way.
func (m *Mirror) serveStoredBlob(ctx context.Context, w http.ResponseWriter, req *http.Request, d v1.Hash, size int64) {
	if req.Method == http.MethodHead {
		blobHeaders(w, req, d, size)
		return
	}
	if fo, ok := cache.As[cache.FileOpener](m.store); ok {
		bf, err := fo.OpenFile(ctx, d)
		switch {
		case err == nil:
			defer bf.Close()
			start, n, ok := blobHeaders(w, req, d, bf.Size())
			if !ok {
				return
			}
			if _, err := bf.SendRange(ctx, bufferedOnly{w}, start, n); err != nil {
				// Bytes that do not match the digest, a file that changed,
				// a read error or a client gone: the response stays short.
				panic(http.ErrAbortHandler)
			}
			return
		case !errors.Is(err, cache.ErrNotFound):
			upstreamError(w, err, codeBlobUnknown)
			return
		}
		// Not in the files (a tier's far tier has it): the store's Get.
	}
	rc, err := m.store.Get(ctx, d)
	if err != nil {
		upstreamError(w, err, codeBlobUnknown)
		return
	}
	defer rc.Close()
	start, n, ok := blobHeaders(w, req, d, size)
	if !ok {
		return
	}
	if err := copyVerified(w, rc, start, n); err != nil {
		panic(http.ErrAbortHandler)
	}
}

// bufferedOnly hides the ResponseWriter's ReadFrom, so that a stored
// blob is copied to the connection through a buffer rather than with
// sendfile(2). Measured on loopback (where a node's mirror serves its
// containerd, and BenchmarkWarmVersusDistribution), sendfile is slower
// for every client that hashes what it reads, as real ones do: a client
// hashing 8 KiB or 32 KiB reads got 75% of docker-registry's rate with
// sendfile and 98% through a buffer, 1 MiB reads 93% and 101%, and the
// client's TCP window closed 7,445 times in 12 reads of a 256 MiB blob
// with sendfile, never through a buffer (the page cache's pages, queued
// on the client's socket, fill its receive buffer sooner). Over TLS,
// which a mirror serving other machines uses, sendfile cannot be used
// anyway. The copy costs less CPU per GiB than docker-registry spends.
type bufferedOnly struct{ io.Writer }

// copyVerified writes bytes [start, start+n) of src, a verifying reader
// of a whole blob, to dst, and the last of them only once src has ended
// cleanly (its digest matched): it reads the rest of the blob, unsent,
// before that.
func copyVerified(dst io.Writer, src io.Reader, start, n int64) error {
	buf := make([]byte, copyChunk)
	// Hide both sides' ReadFrom and WriteTo, so that the copies use buf
	// (io.Discard's ReadFrom reads 8 KiB at a time).
	hidden, discard := struct{ io.Reader }{src}, struct{ io.Writer }{io.Discard}
	if _, err := io.CopyBuffer(discard, io.LimitReader(hidden, start), buf); err != nil {
		return err
	}
	if n == 0 {
		_, err := io.CopyBuffer(discard, hidden, buf)
		return err
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{dst}, io.LimitReader(hidden, n-1), buf); err != nil {
		return err
	}
	last := make([]byte, 1)
	if _, err := io.ReadFull(src, last); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(discard, hidden, buf); err != nil {
		return err
	}
	_, err := dst.Write(last)
	return err
}

// copyChunk is how much a blob copy reads at a time: large enough that
// syscalls and hashing, not per-call overhead, bound the throughput.
const copyChunk = 256 << 10

// parseRange reads a Range header of one byte range ("bytes=a-b",
// "bytes=a-", "bytes=-n") against a blob of size bytes. No header, or one
// this mirror does not interpret (several ranges, another unit), serves
// the whole blob, as RFC 9110 allows; ok is false for a range that cannot
// be satisfied or does not parse.
func parseRange(header string, size int64) (start, n int64, partial, ok bool) {
	if header == "" {
		return 0, size, false, true
	}
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, size, false, true
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	if first == "" { // suffix: the last n bytes
		k, err := strconv.ParseInt(last, 10, 64)
		if err != nil || k <= 0 || size == 0 {
			return 0, 0, false, false
		}
		k = min(k, size)
		return size - k, k, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 || a >= size {
		return 0, 0, false, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false, false
		}
		b = min(b, size-1)
	}
	return a, b - a + 1, true, true
}
