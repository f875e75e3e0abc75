package cache

import (
	"context"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// FileOpener is implemented by a store that keeps each blob in a file on
// the local file system (localfs), for a server that sends stored blobs
// with zero copies — sendfile(2), which io.Copy from an *os.File to a TCP
// connection or an http.ResponseWriter over one uses — and must still
// never complete a response of bytes that do not match their digest. A
// tier forwards it to its near tier; cache.As finds it.
//
// The file itself is not handed out: what a BlobFile sends, it has
// verified, so a caller cannot forget to.
type FileOpener interface {
	// OpenFile opens stored blob d. It fails with ErrNotFound when d is
	// not stored (for a tier: not in its near tier; its Get reaches the
	// far one), and with ErrCorrupt when the entry is not a regular file
	// (which it removes).
	OpenFile(ctx context.Context, d v1.Hash) (BlobFile, error)
}

// BlobFile is one stored blob, open. It is for one goroutine at a time.
type BlobFile interface {
	// Size is the size of the file, which is the blob's unless the file
	// is damaged (then SendRange fails).
	Size() int64
	// SendRange writes bytes [off, off+n) of the blob to w, from the file
	// (with sendfile when w leads to a socket), and sends the range's last
	// byte only once it knows that the whole blob, not only the range,
	// matches its digest and that the file did not change while it was
	// sent. A store may know it from a recent verification of the same
	// file (localfs: its verification record); otherwise it hashes the
	// whole file alongside the send. On a mismatch it fails with
	// ErrCorrupt and removes the entry; on any error w has received fewer
	// than n bytes, so the caller cuts the response and the client never
	// takes it for complete. It returns the bytes written.
	SendRange(ctx context.Context, w io.Writer, off, n int64) (int64, error)
	io.Closer
}
