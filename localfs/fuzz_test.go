package localfs_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/localfs"
)

// fuzzValidDigest is the digest rule written out independently of cache.
func fuzzValidDigest(alg, hex string) bool {
	return alg == "sha256" && len(hex) == 64 && strings.Trim(hex, "0123456789abcdef") == ""
}

// fuzzCheckTree fails if anything exists under base other than the store in
// base/store and its expected tree: oci-layout, index.json,
// index.json.lock (BuildKit's index lock, which localfs takes too),
// blobs/sha256/<64 hex> and .buildcache/{tmp/*.tmp,gc.lock,index.lock,
// usage,counters,counters.lock,roots.journal,leases}.
// With noTemps, temp files are unexpected too.
func fuzzCheckTree(t *testing.T, base string, noTemps bool) {
	t.Helper()
	allowed := map[string]bool{
		".":                               true,
		"store":                           true,
		"store/oci-layout":                true,
		"store/index.json":                true,
		"store/index.json.lock":           true,
		"store/blobs":                     true,
		"store/blobs/sha256":              true,
		"store/.buildcache":               true,
		"store/.buildcache/tmp":           true,
		"store/.buildcache/gc.lock":       true,
		"store/.buildcache/index.lock":    true,
		"store/.buildcache/usage":         true, // the usage record shared by processes
		"store/.buildcache/counters":      true, // lifetime counters, and their lock
		"store/.buildcache/counters.lock": true,
		"store/.buildcache/roots.journal": true, // roots not yet compacted into index.json
		"store/.buildcache/leases":        true, // leases of pulls in progress (empty once released)
	}
	err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		dir, name := filepath.Split(rel)
		switch {
		case allowed[rel]:
		case dir == "store/blobs/sha256/" && e.Type().IsRegular() && fuzzValidDigest("sha256", name):
		case dir == "store/.buildcache/tmp/" && e.Type().IsRegular() && strings.HasSuffix(name, ".tmp") && !noTemps:
		case dir == "store/.buildcache/tmp/" && e.Type().IsRegular() && strings.HasPrefix(name, "counters-") && strings.HasSuffix(name, ".tmp"):
			// the counters' background flush, renamed into place in a moment
		default:
			t.Errorf("unexpected %s (%v) under the store's parent", rel, e.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzLocalfsDigestPaths feeds arbitrary digests to every method that takes
// one: each must either reject it with ErrInvalidDigest, or it is a valid
// digest; and nothing may appear outside the store's own tree. Run with
// go test -run XXX -fuzz FuzzLocalfsDigestPaths ./localfs/
func FuzzLocalfsDigestPaths(f *testing.F) {
	good := cachetest.NewBlob(1, 100)
	for _, h := range cachetest.InvalidDigests {
		f.Add(h.Algorithm, h.Hex, []byte("x"))
	}
	f.Add(good.Digest.Algorithm, good.Digest.Hex, good.Data) // stored, read and deleted
	f.Add("sha256", good.Digest.Hex, []byte("not the bytes"))
	f.Add("sha256", "../../../store-escape", []byte("x"))
	f.Add("sha256", "../../index.json", []byte("{}"))
	f.Add("sha256", "../../oci-layout", []byte("x"))
	f.Add("sha256", "../../.buildcache/tmp/x.tmp", []byte("x"))
	f.Add("sha256/..", good.Digest.Hex, []byte("x"))
	f.Add("..", "..", []byte("x"))
	f.Add("sha256", ".", []byte("x"))
	f.Add("sha256", "", []byte{})
	f.Add("", "", []byte{})

	base := f.TempDir()
	s, err := localfs.Open(filepath.Join(base, "store"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, alg, hex string, data []byte) {
		ctx := t.Context()
		d := v1.Hash{Algorithm: alg, Hex: hex}
		valid := fuzzValidDigest(alg, hex)
		stored := valid && cachetest.Digest(data) == d
		// check: an invalid digest must be refused as such; a valid one
		// must never be, and may fail only in the ways allowed for it.
		check := func(op string, err error, allowed ...error) {
			t.Helper()
			if !valid {
				if !errors.Is(err, cache.ErrInvalidDigest) {
					t.Fatalf("%s(%q, %q) = %v, want ErrInvalidDigest", op, alg, hex, err)
				}
				return
			}
			if err == nil {
				return
			}
			for _, a := range allowed {
				if errors.Is(err, a) {
					return
				}
			}
			t.Fatalf("%s(%q) = %v, want nil or one of %v", op, d, err, allowed)
		}

		_, err := s.Stat(ctx, d)
		check("Stat", err, cache.ErrNotFound)
		rc, err := s.Get(ctx, d)
		check("Get", err, cache.ErrNotFound)
		if rc != nil {
			rc.Close()
		}
		err = s.Put(ctx, d, int64(len(data)), bytes.NewReader(data))
		if stored {
			check("Put", err)
		} else {
			check("Put", err, cache.ErrDigestMismatch)
		}
		if valid && !stored && err == nil {
			t.Fatalf("Put(%s) of bytes hashing to %s succeeded", d, cachetest.Digest(data))
		}
		size, err := s.Stat(ctx, d)
		check("Stat after Put", err, cache.ErrNotFound)
		if stored && size != int64(len(data)) {
			t.Fatalf("Stat after Put = %d, %v; want %d", size, err, len(data))
		}
		if stored {
			rc, err := s.Get(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Get after Put: %d bytes, %v", len(got), err)
			}
		}
		err = s.Delete(ctx, d)
		if stored {
			check("Delete", err)
		} else {
			check("Delete", err, cache.ErrNotFound)
		}
		fuzzCheckTree(t, base, true)
	})
}
