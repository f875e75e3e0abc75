package mirror_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/mirror"
)

// bound is how long a test waits for something that must happen; reaching
// it is a failure (a hang), never a timing measurement.
const bound = 60 * time.Second

// blobUpstream serves one blob of size bytes generated from seed, counting
// GETs. With a gate, it sends the first half and then waits for the gate
// to open; with corrupt, the last byte it sends is wrong.
type blobUpstream struct {
	srv     *httptest.Server
	seed    uint64
	size    int64
	digest  v1.Hash
	gets    atomic.Int64
	gate    chan struct{} // nil: no wait
	corrupt bool
}

func blobBytes(seed uint64, size int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), size)
}

func newBlobUpstream(t *testing.T, size int64, gated, corrupt bool) *blobUpstream {
	t.Helper()
	u := &blobUpstream{seed: uint64(size), size: size, corrupt: corrupt}
	if gated {
		u.gate = make(chan struct{})
	}
	h := sha256.New()
	_, _ = io.Copy(h, blobBytes(u.seed, size))
	u.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if r.URL.Path != "/v2/team/app/blobs/"+u.digest.String() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		if r.Method == http.MethodHead {
			return
		}
		u.gets.Add(1)
		body := blobBytes(u.seed, size)
		if _, err := io.CopyN(w, body, size/2); err != nil {
			return
		}
		if u.gate != nil {
			w.(http.Flusher).Flush()
			select {
			case <-u.gate:
			case <-r.Context().Done():
				return
			}
		}
		rest, _ := io.ReadAll(body) // the test's blobs are small enough here
		if u.corrupt {
			rest[len(rest)-1] ^= 0xff
		}
		_, _ = w.Write(rest)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

type streamFixture struct {
	up      *blobUpstream
	store   cache.LayerCache
	mirror  *mirror.Mirror
	srv     *httptest.Server
	tempDir string
	// handlerDone gets a value each time a mirror handler returns.
	handlerDone chan struct{}
}

func newStreamFixture(t *testing.T, up *blobUpstream, opts ...mirror.Option) *streamFixture {
	t.Helper()
	return newStreamFixtureOn(t, up, newLocal(t), opts...)
}

// newStreamFixtureOn is newStreamFixture over store, with opts.
func newStreamFixtureOn(t *testing.T, up *blobUpstream, store cache.LayerCache, opts ...mirror.Option) *streamFixture {
	t.Helper()
	res := newResolver(t, store)
	f := &streamFixture{up: up, store: store, tempDir: t.TempDir(), handlerDone: make(chan struct{}, 64)}
	opts = append([]mirror.Option{mirror.WithUpstream(strings.TrimPrefix(up.srv.URL, "http://")), mirror.WithTempDir(f.tempDir)}, opts...)
	var err error
	f.mirror, err = mirror.New(res, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { f.handlerDone <- struct{}{} }()
		f.mirror.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		f.srv.Close()
		_ = f.mirror.Close()
	})
	return f
}

func (f *streamFixture) url() string { return f.srv.URL + "/v2/team/app/blobs/" + f.up.digest.String() }

// open GETs the blob and checks the response's headers.
func (f *streamFixture) open(ctx context.Context, t *testing.T, h http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url(), nil)
	if err != nil {
		t.Error(err)
		return nil
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return nil
	}
	if resp.StatusCode/100 != 2 {
		t.Errorf("GET blob: %s", resp.Status)
	}
	return resp
}

// readHashed reads body to its end, returning the byte count and digest.
func readHashed(body io.Reader) (int64, v1.Hash, error) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	return n, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, err
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(bound):
		t.Fatalf("gave up waiting (%v) for %s", bound, what)
	}
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// Sixteen clients asking at once for a blob not stored make one upstream
// GET, are all streamed to while it downloads (each has its first bytes
// before the upstream has sent the second half), and all get the blob.
func TestColdBlobConcurrentClientsOneUpstreamGet(t *testing.T) {
	const clients = 16
	up := newBlobUpstream(t, 8<<20, true, false)
	f := newStreamFixture(t, up)
	var started, wg sync.WaitGroup
	started.Add(clients)
	results := make([]v1.Hash, clients)
	sizes := make([]int64, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := f.open(context.Background(), t, nil)
			if resp == nil {
				started.Done()
				return
			}
			defer resp.Body.Close()
			first := make([]byte, 1)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Error(err)
			}
			started.Done()
			n, d, err := readHashed(io.MultiReader(bytes.NewReader(first), resp.Body))
			if err != nil {
				t.Errorf("client %d: %v", i, err)
			}
			results[i], sizes[i] = d, n
		}()
	}
	allStarted := make(chan struct{})
	go func() { started.Wait(); close(allStarted) }()
	waitFor(t, allStarted, "every client's first byte while the upstream holds back the second half")
	close(up.gate)
	wg.Wait()
	for i := range clients {
		if results[i] != up.digest || sizes[i] != up.size {
			t.Errorf("client %d got %d bytes hashing to %s, want %d of %s", i, sizes[i], results[i], up.size, up.digest)
		}
	}
	if n := up.gets.Load(); n != 1 {
		t.Errorf("upstream GETs of the blob = %d, want 1", n)
	}
	if _, err := f.store.Stat(context.Background(), up.digest); err != nil {
		t.Errorf("blob not stored: %v", err)
	}
}

// A client reading 1 KiB every 10 ms does not hold back another: the fast
// one has the whole, verified blob (so it is stored) while the slow one is
// still reading.
func TestSlowClientDoesNotHoldBackFastOne(t *testing.T) {
	up := newBlobUpstream(t, 8<<20, false, false)
	f := newStreamFixture(t, up)
	slowStarted, fastDone := make(chan struct{}), make(chan struct{})
	var slowPosAtFastDone atomic.Int64
	slowPosAtFastDone.Store(-1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp := f.open(context.Background(), t, nil)
		if resp == nil {
			close(slowStarted)
			return
		}
		defer resp.Body.Close()
		h := sha256.New()
		buf := make([]byte, 1<<10)
		var pos int64
		for {
			n, err := resp.Body.Read(buf)
			h.Write(buf[:n])
			pos += int64(n)
			if pos == int64(n) && n > 0 {
				close(slowStarted)
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("slow client: %v", err)
				}
				break
			}
			select {
			case <-fastDone:
				if slowPosAtFastDone.Load() < 0 {
					slowPosAtFastDone.Store(pos)
				}
				continue // read the rest at full speed
			default:
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != up.digest.Hex || pos != up.size {
			t.Errorf("slow client got %d bytes hashing to %s", pos, got)
		}
	}()
	waitFor(t, slowStarted, "the slow client's first bytes")
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp := f.open(context.Background(), t, nil)
		if resp == nil {
			return
		}
		defer resp.Body.Close()
		n, d, err := readHashed(resp.Body)
		if err != nil || d != up.digest || n != up.size {
			t.Errorf("fast client: %d bytes of %s, %v", n, d, err)
		}
		if _, err := f.store.Stat(context.Background(), up.digest); err != nil {
			t.Errorf("fast client done but the blob is not stored: %v", err)
		}
	}()
	waitFor(t, done, "the fast client, which the slow one must not hold back")
	close(fastDone)
	wg.Wait()
	if pos := slowPosAtFastDone.Load(); pos < 0 || pos >= up.size {
		t.Errorf("slow client had read %d of %d bytes when the fast one finished; want it still reading", pos, up.size)
	}
	if n := up.gets.Load(); n != 1 {
		t.Errorf("upstream GETs = %d, want 1", n)
	}
}

// An upstream sending bytes that do not match the digest: every client's
// response is cut short (never a complete body), nothing is stored and no
// temp file is left.
func TestCorruptUpstreamCutsEveryClient(t *testing.T) {
	const clients = 4
	up := newBlobUpstream(t, 1<<20, true, true)
	f := newStreamFixture(t, up)
	var started, wg sync.WaitGroup
	started.Add(clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := f.open(context.Background(), t, nil)
			if resp == nil {
				started.Done()
				return
			}
			defer resp.Body.Close()
			if resp.ContentLength != up.size {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, up.size)
			}
			first := make([]byte, 1)
			_, _ = io.ReadFull(resp.Body, first)
			started.Done()
			rest, err := io.ReadAll(resp.Body)
			if err == nil || int64(len(rest)+1) >= up.size {
				t.Errorf("client %d: read %d bytes, err %v; want the response cut before its end", i, len(rest)+1, err)
			}
		}()
	}
	allStarted := make(chan struct{})
	go func() { started.Wait(); close(allStarted) }()
	waitFor(t, allStarted, "every client's first byte")
	close(up.gate)
	wg.Wait()
	if _, err := f.store.Stat(context.Background(), up.digest); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Stat of the corrupt blob: %v, want ErrNotFound", err)
	}
	if left := tempFiles(t, f.tempDir); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
	// A client sees its response cut before its handler has returned and
	// counted the failure: wait for the counts, then check them.
	eventually(t, "every failed response counted", func() bool {
		return f.mirror.Stats().FailedResponses[mirror.ReasonDigestMismatch] >= clients
	})
	st := f.mirror.Stats()
	if st.DigestMismatches != 1 || st.FailedResponses[mirror.ReasonDigestMismatch] != clients {
		t.Errorf("Stats: %d digest mismatches, %d responses failed for one, want 1 and %d", st.DigestMismatches, st.FailedResponses[mirror.ReasonDigestMismatch], clients)
	}
}

// A client leaving mid-stream does not fail the others, and the blob ends
// stored from the one download.
func TestClientLeavingDoesNotFailOthers(t *testing.T) {
	up := newBlobUpstream(t, 4<<20, true, false)
	f := newStreamFixture(t, up)
	leaverCtx, leave := context.WithCancel(context.Background())
	defer leave()
	leaver := f.open(leaverCtx, t, nil)
	if leaver == nil {
		t.FailNow()
	}
	if _, err := io.ReadFull(leaver.Body, make([]byte, 1<<10)); err != nil {
		t.Fatal(err)
	}
	stayer := f.open(context.Background(), t, nil)
	if stayer == nil {
		t.FailNow()
	}
	defer stayer.Body.Close()
	if _, err := io.ReadFull(stayer.Body, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	leave()
	leaver.Body.Close()
	waitFor(t, f.handlerDone, "the leaving client's handler to return")
	close(up.gate)
	n, _, err := readHashed(stayer.Body)
	if err != nil || n+1 != up.size {
		t.Errorf("staying client: %d more bytes, %v", n, err)
	}
	if _, err := f.store.Stat(context.Background(), up.digest); err != nil {
		t.Errorf("blob not stored: %v", err)
	}
	if n := up.gets.Load(); n != 1 {
		t.Errorf("upstream GETs = %d, want 1", n)
	}
}

// The only client leaving does not stop the download: the blob is stored
// all the same and the next client gets it with no second upstream GET.
func TestLastClientLeavingStillStoresBlob(t *testing.T) {
	up := newBlobUpstream(t, 4<<20, true, false)
	f := newStreamFixture(t, up)
	ctx, leave := context.WithCancel(context.Background())
	resp := f.open(ctx, t, nil)
	if resp == nil {
		t.FailNow()
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<10)); err != nil {
		t.Fatal(err)
	}
	leave()
	resp.Body.Close()
	waitFor(t, f.handlerDone, "the client's handler to return")
	close(up.gate)
	again := f.open(context.Background(), t, nil)
	if again == nil {
		t.FailNow()
	}
	defer again.Body.Close()
	n, d, err := readHashed(again.Body)
	if err != nil || n != up.size || d != up.digest {
		t.Errorf("second client: %d bytes of %s, %v", n, d, err)
	}
	if n := up.gets.Load(); n != 1 {
		t.Errorf("upstream GETs = %d, want 1", n)
	}
}

// A Range of a blob not yet stored is served from the download.
func TestColdBlobRange(t *testing.T) {
	up := newBlobUpstream(t, 1<<20, false, false)
	f := newStreamFixture(t, up)
	resp := f.open(context.Background(), t, http.Header{"Range": {"bytes=1000-1999"}})
	if resp == nil {
		t.FailNow()
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(blobBytes(up.seed, up.size))
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, want[1000:2000]) {
		t.Errorf("%s, %d bytes, Content-Range %q", resp.Status, len(got), resp.Header.Get("Content-Range"))
	}
	if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes 1000-1999/%d", up.size) {
		t.Errorf("Content-Range %q", cr)
	}
}

// A 64 MiB blob not stored is streamed with far less than 64 MiB of heap.
func TestColdBlobHeapStaysSmall(t *testing.T) {
	const size = 64 << 20
	u := &blobUpstream{seed: 7, size: size}
	h := sha256.New()
	_, _ = io.Copy(h, blobBytes(u.seed, size))
	u.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/team/app/blobs/"+u.digest.String() {
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		u.gets.Add(1)
		_, _ = io.Copy(w, blobBytes(u.seed, size))
	}))
	t.Cleanup(u.srv.Close)
	f := newStreamFixture(t, u)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	resp := f.open(context.Background(), t, nil)
	if resp == nil {
		t.FailNow()
	}
	n, d, err := readHashed(resp.Body)
	resp.Body.Close()
	close(stop)
	<-sampled
	if err != nil || n != size || d != u.digest {
		t.Fatalf("got %d bytes of %s, %v", n, d, err)
	}
	growth := int64(peak.Load()) - int64(before.HeapAlloc)
	t.Logf("heap growth during a %d MiB cold blob: %.1f MiB", size>>20, float64(growth)/(1<<20))
	if growth > 16<<20 {
		t.Errorf("heap grew %d MiB while streaming a %d MiB blob; want < 16 MiB", growth>>20, size>>20)
	}
}
