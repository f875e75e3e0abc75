package mirror_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/memory"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/tier"
)

// Stored blobs (issue 20, items 1 and 2): whatever the request, full or
// ranged, a blob whose file no longer matches its digest never yields a
// complete response, and its entry goes; a verified blob is not read
// whole again for each range.

// storedFixture is a mirror over a store holding blobs put directly,
// in front of an upstream that has nothing.
type storedFixture struct {
	disk  *localfs.Store   // where the blob files are
	store cache.LayerCache // what the mirror serves: disk, or a tier over it
	srv   *httptest.Server

	mu    sync.Mutex
	sizes map[string]int64 // digest -> size of the blobs put, which the upstream confirms
}

func newStoredFixture(t *testing.T, tiered bool) *storedFixture {
	t.Helper()
	disk, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { disk.Close() })
	f := &storedFixture{disk: disk, store: disk}
	if tiered {
		far, err := memory.NewLayerCache()
		if err != nil {
			t.Fatal(err)
		}
		c, err := tier.New(disk, far)
		if err != nil {
			t.Fatal(err)
		}
		f.store = c
	}
	// The upstream holds nothing but confirms, for a HEAD under any name,
	// the blobs put here: the mirror serves a stored blob only under a
	// name known to hold it, and these tests are about the stored bytes.
	f.sizes = map[string]int64{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		size, ok := f.sizes[path.Base(r.URL.Path)]
		f.mu.Unlock()
		if r.Method != http.MethodHead || !strings.Contains(r.URL.Path, "/blobs/") || !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Docker-Content-Digest", path.Base(r.URL.Path))
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}))
	t.Cleanup(up.Close)
	m, err := mirror.New(newResolver(t, f.store), mirror.WithUpstream(strings.TrimPrefix(up.URL, "http://")))
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(m) // a real TCP connection: io.Copy from a file is sendfile
	t.Cleanup(func() {
		f.srv.Close()
		_ = m.Close()
	})
	return f
}

// put stores a random blob of size bytes.
func (f *storedFixture) put(t *testing.T, size int64) ([]byte, v1.Hash) {
	t.Helper()
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(size), byte(size >> 8)})
	_, _ = r.Read(data)
	d := testserver.Digest(data)
	if err := f.store.Put(t.Context(), d, size, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.sizes[d.String()] = size
	f.mu.Unlock()
	return data, d
}

// flip changes byte at of blob d's file in place, as bit rot or another
// program would.
func (f *storedFixture) flip(t *testing.T, d v1.Hash, at int64) {
	t.Helper()
	file, err := os.OpenFile(filepath.Join(f.disk.Dir(), "blobs", "sha256", d.Hex), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	b := []byte{0}
	if _, err := file.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := file.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// fetch GETs blob d with an optional Range and reads the whole body. It
// returns the status, the bytes read, whether the response was complete
// (all Content-Length bytes and a clean end) and the read error.
func (f *storedFixture) fetch(t *testing.T, d v1.Hash, rng string) (status int, body []byte, complete bool) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL+"/v2/team/app/blobs/"+d.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, false
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err == nil && int64(len(body)) == resp.ContentLength
}

func forEachStore(t *testing.T, test func(t *testing.T, f *storedFixture)) {
	for _, tiered := range []bool{false, true} {
		name := "localfs"
		if tiered {
			name = "tier"
		}
		t.Run(name, func(t *testing.T) { test(t, newStoredFixture(t, tiered)) })
	}
}

// TestStoredRangeOfFlippedBlob: a range of a blob damaged on disk, be it
// over the damaged byte or elsewhere, is never a complete 206, and the
// entry is removed. (Ranges were served unverified before.)
func TestStoredRangeOfFlippedBlob(t *testing.T) {
	const size = 1 << 20
	for _, c := range []struct {
		rng  string
		flip int64
	}{
		{"bytes=0-9", size / 2},       // the damage is outside the range
		{"bytes=-1", 100},             // the tail, damage at the head
		{"bytes=1000-2000", 1500},     // over the damage
		{"bytes=0-0", 0},              // the damaged byte alone
		{"bytes=524288-", size - 1},   // to the end, damage at the end
		{"bytes=0-9", size - 1 - 100}, // a range ending long before the damage
	} {
		t.Run(fmt.Sprintf("%s,flip@%d", c.rng, c.flip), func(t *testing.T) {
			forEachStore(t, func(t *testing.T, f *storedFixture) {
				_, d := f.put(t, size)
				f.flip(t, d, c.flip)
				status, body, complete := f.fetch(t, d, c.rng)
				if complete && status/100 == 2 {
					t.Fatalf("a range of a damaged blob was served complete: %d, %d bytes", status, len(body))
				}
				if _, err := f.disk.Stat(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("the damaged entry is still stored (Stat: %v)", err)
				}
				if got := f.disk.Stats().Corruptions; got != 1 {
					t.Errorf("Corruptions = %d, want 1", got)
				}
			})
		})
	}
}

// TestStoredFullGetOfFlippedBlob: a whole blob damaged on disk, sent
// with sendfile, is cut before its last byte, wherever the damage is.
func TestStoredFullGetOfFlippedBlob(t *testing.T) {
	const size = 4 << 20
	for _, at := range []int64{0, size / 2, size - 1} {
		t.Run(strconv.FormatInt(at, 10), func(t *testing.T) {
			forEachStore(t, func(t *testing.T, f *storedFixture) {
				_, d := f.put(t, size)
				f.flip(t, d, at)
				status, body, complete := f.fetch(t, d, "")
				if complete || len(body) >= size {
					t.Fatalf("a damaged blob was served: %d, %d of %d bytes, complete %v", status, len(body), size, complete)
				}
				if _, err := f.disk.Stat(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("the damaged entry is still stored (Stat: %v)", err)
				}
			})
		})
	}
}

// TestStoredBlobDamagedAfterVerification: a blob served (and verified)
// once, then damaged in place, is caught on the next request: the damage
// changes the file's identity, so what was verified is not trusted.
func TestStoredBlobDamagedAfterVerification(t *testing.T) {
	const size = 1 << 20
	forEachStore(t, func(t *testing.T, f *storedFixture) {
		data, d := f.put(t, size)
		if _, body, complete := f.fetch(t, d, ""); !complete || !bytes.Equal(body, data) {
			t.Fatal("the good blob was not served whole")
		}
		f.flip(t, d, 10)
		if status, body, complete := f.fetch(t, d, "bytes=-1"); complete && status/100 == 2 {
			t.Fatalf("a blob damaged after it was verified was served: %d, %d bytes", status, len(body))
		}
		if _, err := f.disk.Stat(t.Context(), d); !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("the damaged entry is still stored (Stat: %v)", err)
		}
	})
}

// TestStoredTailRangeReadsLittle: once a blob is verified, a tail range
// reads its tail, not the whole blob (counted in the store's BytesOut and
// in the bytes this process read, /proc/self/io rchar), and is right.
func TestStoredTailRangeReadsLittle(t *testing.T) {
	const size, requests = 32 << 20, 20
	forEachStore(t, func(t *testing.T, f *storedFixture) {
		data, d := f.put(t, size)
		if status, body, complete := f.fetch(t, d, "bytes=-1"); status != http.StatusPartialContent || !complete || body[0] != data[size-1] {
			t.Fatalf("first tail range: %d, %q, complete %v", status, body, complete)
		}
		out0, read0 := f.disk.Stats().BytesOut, readBytes(t)
		for i := range requests {
			rng, want := "bytes=-1", data[size-1:]
			if i%2 == 1 {
				rng, want = "bytes=0-0", data[:1]
			}
			status, body, complete := f.fetch(t, d, rng)
			if status != http.StatusPartialContent || !complete || !bytes.Equal(body, want) {
				t.Fatalf("%s: %d, %q, complete %v", rng, status, body, complete)
			}
		}
		out, read := f.disk.Stats().BytesOut-out0, readBytes(t)-read0
		t.Logf("%d one-byte ranges: store BytesOut %d, process read %d bytes", requests, out, read)
		if out > requests {
			t.Errorf("%d one-byte ranges took %d bytes out of the store, want at most %d", requests, out, requests)
		}
		if read >= size {
			t.Errorf("%d one-byte ranges of a verified %d-byte blob read %d bytes: a full read per range", requests, size, read)
		}
	})
}

// readBytes is what this process has read so far (/proc/self/io rchar:
// read(2), pread(2), sendfile(2) and the like).
func readBytes(t *testing.T) uint64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no rchar in /proc/self/io: %q", raw)
	return 0
}
