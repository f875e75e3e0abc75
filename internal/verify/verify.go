// Package verify provides a reader that checks a stream against its digest
// and size as it is read, so that no caller mistakes unverified bytes for a
// complete, correct blob.
package verify

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Reader hashes what it reads. Once the underlying reader is exhausted it
// compares digest and size, and returns io.EOF only when both match;
// otherwise it returns an error wrapping the sentinel given to NewReader.
// Reading more bytes than the expected size fails at once, without waiting
// for EOF.
type Reader struct {
	r        io.Reader
	want     v1.Hash
	size     int64 // expected size; < 0 means not checked
	n        int64
	h        hash.Hash
	mismatch error
	err      error // sticky final error (io.EOF or a mismatch)
}

// NewReader returns a verifying reader over r, which must yield exactly the
// blob d of size bytes (size < 0: any size). mismatch is the sentinel that
// verification failures wrap (cache.ErrCorrupt for reads of stored blobs,
// cache.ErrDigestMismatch for bytes given to Put). d is hashed with its
// algorithm: sha256 (what stores keep), or sha512 (what a registry may
// also serve); a digest of any other algorithm fails the first Read.
func NewReader(r io.Reader, d v1.Hash, size int64, mismatch error) *Reader {
	v := &Reader{r: r, want: d, size: size, mismatch: mismatch}
	switch d.Algorithm {
	case "sha256":
		v.h = sha256.New()
	case "sha512":
		v.h = sha512.New()
	default:
		v.err = fmt.Errorf("%s: algorithm %q cannot be verified: %w", d, d.Algorithm, mismatch)
	}
	return v
}

// Read implements io.Reader.
func (v *Reader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.size >= 0 {
		// Ask for at most one byte beyond the expected size, enough to
		// notice an oversized stream without reading it all.
		if rest := v.size - v.n + 1; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	n, err := v.r.Read(p)
	if n > 0 {
		v.n += int64(n)
		if v.size >= 0 && v.n > v.size {
			v.err = fmt.Errorf("%s: more than the expected %d bytes: %w", v.want, v.size, v.mismatch)
			return 0, v.err
		}
		v.h.Write(p[:n])
	}
	if err == io.EOF {
		v.err = v.check()
		return n, v.err
	}
	return n, err
}

// N is the number of bytes read so far.
func (v *Reader) N() int64 { return v.n }

// Verified reports whether the whole stream was read and matched.
func (v *Reader) Verified() bool { return v.err == io.EOF }

func (v *Reader) check() error {
	if v.size >= 0 && v.n != v.size {
		return fmt.Errorf("%s: got %d bytes, want %d: %w", v.want, v.n, v.size, v.mismatch)
	}
	got := hex.EncodeToString(v.h.Sum(nil))
	if got != v.want.Hex {
		return fmt.Errorf("%s: bytes hash to %s:%s: %w", v.want, v.want.Algorithm, got, v.mismatch)
	}
	return io.EOF
}

// Drain reads the rest of v so that verification completes, and returns
// nil if the whole stream matched.
func (v *Reader) Drain() error {
	_, err := io.Copy(io.Discard, v)
	if err == nil && !v.Verified() {
		// io.Copy swallows io.EOF; a nil error means EOF was reached.
		return errors.New("verify: stream ended without verification")
	}
	return err
}
