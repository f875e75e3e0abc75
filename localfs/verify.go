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

type verifyOptions struct {
	remove   bool
	progress func(done, total int)
}

// VerifyProgress has Verify call fn with the blobs hashed so far and the
// blobs found, after each blob, from the goroutine that called Verify;
// total is counted first, by one more listing of blobs/. Default: no
// calls. A nil fn is an error.
func VerifyProgress(fn func(done, total int)) VerifyOption {
	return func(o *verifyOptions) error {
		if fn == nil {
			return errors.New("localfs: VerifyProgress(nil)")
		}
		o.progress = fn
		return nil
	}
}

// VerifyRemove removes the bad blobs Verify finds (default: only report).
func VerifyRemove() VerifyOption {
	return func(o *verifyOptions) error {
		o.remove = true
		return nil
	}
}

// Verify hashes every blob and checks that index.json's roots and what
// they reference are present. It reports bad blobs and, with
// VerifyRemove, removes them. It streams blobs/ and holds no per-blob
// data but what it reports and what reachability needs.
func (s *Store) Verify(ctx context.Context, opts ...VerifyOption) (VerifyReport, error) {
	var o verifyOptions
	var rep VerifyReport
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return rep, err
		}
	}
	total := -1
	if o.progress != nil {
		total = 0
		if err := s.eachBlob(ctx, func(string, fs.FileInfo) error { total++; return nil }); err != nil {
			return rep, err
		}
		o.progress(0, total)
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
	done := 0
	err = s.eachBlob(ctx, func(name string, _ fs.FileInfo) error {
		done++
		if o.progress != nil {
			defer func() { o.progress(done, max(total, done)) }()
		}
		s.verifyOne(v1.Hash{Algorithm: "sha256", Hex: name}, o, &rep, *bp)
		return nil
	})
	if err != nil {
		return rep, err
	}
	keep, _, err := s.reachable(ctx)
	if err != nil {
		return rep, err
	}
	for k, r := range keep {
		if !r.required {
			continue
		}
		if _, err := os.Lstat(filepath.Join(s.blobDir, hexOf(k))); errors.Is(err, fs.ErrNotExist) {
			rep.Missing = append(rep.Missing, k.hash())
		}
	}
	sort.Slice(rep.Missing, func(i, j int) bool { return rep.Missing[i].Hex < rep.Missing[j].Hex })
	return rep, nil
}

// verifyOne hashes blob d into rep.
func (s *Store) verifyOne(d v1.Hash, o verifyOptions, rep *VerifyReport, buf []byte) {
	f, info, err := openRegular(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return // removed since it was listed
	}
	if err != nil {
		// Unreadable, or replaced by a link since it was listed (the next
		// Verify, Get or Stat reports that): not checked now.
		rep.Unchecked = append(rep.Unchecked, BadBlob{Digest: d, Err: fmt.Errorf("localfs: verify %s: %w", d, err)})
		return
	}
	defer f.Close()
	vr := verify.NewReader(f, d, info.Size(), cache.ErrCorrupt)
	_, err = io.CopyBuffer(io.Discard, vr, buf)
	if err != nil && !errors.Is(err, cache.ErrCorrupt) {
		rep.Unchecked = append(rep.Unchecked, BadBlob{Digest: d, Err: fmt.Errorf("localfs: verify %s: %w", d, err)})
		return
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
}
