package localfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/verify"
)

// BadBlob is a blob that failed verification.
type BadBlob struct {
	Digest v1.Hash
	Err    error
}

// VerifyReport says what Verify found.
type VerifyReport struct {
	Checked int   // blobs hashed
	Bytes   int64 // bytes hashed
	// Bad are blobs whose bytes do not match their name, and entries named
	// like a blob that are not regular files (a symbolic link, a
	// directory): both wrap cache.ErrCorrupt.
	Bad       []BadBlob
	Removed   int       // bad entries removed (VerifyRemove); a link is removed, never its target
	Missing   []v1.Hash // blobs that index.json reaches but that are absent
	Unchecked []BadBlob // entries that could not be read (permissions, I/O), neither good nor known bad
}

// VerifyOption configures Verify. It has the shape of Option and
// GCOption, so that an option that takes a value can reject it.
type VerifyOption func(*verifyOptions) error

type verifyOptions struct{ remove bool }

// VerifyRemove removes the bad blobs Verify finds (default: only report).
func VerifyRemove() VerifyOption {
	return func(o *verifyOptions) error {
		o.remove = true
		return nil
	}
}

// Verify hashes every blob and checks that index.json's roots and what
// they reference are present. It reports bad blobs and, with
// VerifyRemove, removes them.
func (s *Store) Verify(ctx context.Context, opts ...VerifyOption) (VerifyReport, error) {
	var o verifyOptions
	var rep VerifyReport
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return rep, err
		}
	}
	blobs, _, err := s.scan(ctx)
	if err != nil {
		return rep, err
	}
	irregular, err := s.irregularBlobs()
	if err != nil {
		return rep, err
	}
	for _, d := range irregular {
		_, err := lstatRegular(s.blobPath(d))
		if !errors.Is(err, errNotRegular) {
			continue // gone or replaced since
		}
		bad := fmt.Errorf("localfs: verify %s: %w: %w", d, cache.ErrCorrupt, err)
		if o.remove {
			var removed bool
			if removed, bad = s.dropIrregular("verify", d, err); removed {
				rep.Removed++
			}
		}
		rep.Bad = append(rep.Bad, BadBlob{Digest: d, Err: bad})
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		d := v1.Hash{Algorithm: "sha256", Hex: b.hex}
		f, info, err := openRegular(s.blobPath(d))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if errors.Is(err, errNotRegular) {
			// Replaced by a link since the scan: the next Verify, Get or
			// Stat reports it; say it was not checked now.
			rep.Unchecked = append(rep.Unchecked, BadBlob{Digest: d, Err: fmt.Errorf("localfs: verify %s: %w", d, err)})
			continue
		}
		if err != nil {
			rep.Unchecked = append(rep.Unchecked, BadBlob{Digest: d, Err: fmt.Errorf("localfs: verify %s: %w", d, err)})
			continue
		}
		vr := verify.NewReader(f, d, info.Size(), cache.ErrCorrupt)
		_, err = io.CopyBuffer(io.Discard, vr, *bp)
		if err != nil && !errors.Is(err, cache.ErrCorrupt) {
			rep.Unchecked = append(rep.Unchecked, BadBlob{Digest: d, Err: fmt.Errorf("localfs: verify %s: %w", d, err)})
			f.Close()
			continue
		}
		rep.Checked++
		rep.Bytes += vr.N()
		if err == nil && !vr.Verified() {
			err = fmt.Errorf("%s: %w", d, cache.ErrCorrupt)
		}
		if err != nil {
			rep.Bad = append(rep.Bad, BadBlob{Digest: d, Err: err})
			if o.remove {
				s.stats.Corruptions.Add(1)
				s.removeIfSame(d, f)
				rep.Removed++
			}
		}
		f.Close()
	}
	keep, err := s.reachable(ctx)
	if err != nil {
		return rep, err
	}
	for hex, r := range keep {
		if !r.required {
			continue
		}
		if _, err := os.Lstat(filepath.Join(s.blobDir, hex)); errors.Is(err, fs.ErrNotExist) {
			rep.Missing = append(rep.Missing, v1.Hash{Algorithm: "sha256", Hex: hex})
		}
	}
	sort.Slice(rep.Missing, func(i, j int) bool { return rep.Missing[i].Hex < rep.Missing[j].Hex })
	return rep, nil
}
