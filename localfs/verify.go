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
	Checked int       // blobs hashed
	Bytes   int64     // bytes hashed
	Bad     []BadBlob // blobs whose bytes do not match their name
	Removed int       // bad blobs removed (VerifyRemove)
	Missing []v1.Hash // blobs that index.json reaches but that are absent
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
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		d := v1.Hash{Algorithm: "sha256", Hex: b.hex}
		f, err := os.Open(s.blobPath(d))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("localfs: verify %s: %w", d, err)
		}
		vr := verify.NewReader(f, d, b.size, cache.ErrCorrupt)
		_, err = io.CopyBuffer(io.Discard, vr, *bp)
		rep.Checked++
		rep.Bytes += vr.N()
		if err == nil && !vr.Verified() {
			err = fmt.Errorf("%s: %w", d, cache.ErrCorrupt)
		}
		if err != nil {
			rep.Bad = append(rep.Bad, BadBlob{Digest: d, Err: err})
			if o.remove && errors.Is(err, cache.ErrCorrupt) {
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
	for hex, required := range keep {
		if !required {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.blobDir, hex)); errors.Is(err, fs.ErrNotExist) {
			rep.Missing = append(rep.Missing, v1.Hash{Algorithm: "sha256", Hex: hex})
		}
	}
	sort.Slice(rep.Missing, func(i, j int) bool { return rep.Missing[i].Hex < rep.Missing[j].Hex })
	return rep, nil
}
