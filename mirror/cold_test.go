package mirror_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/regclient"
)

// A cold blob is written once, in the store (issue 20, item 3; issue 19,
// item 9): while it streams, the one file holding its bytes is in the
// store's temp directory (none in WithTempDir or $TMPDIR, where a crash
// would leave it for good), and that very file (inode) is then the stored
// blob.
func TestColdBlobWrittenOnceInStore(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	up := newBlobUpstream(t, 4<<20, true, false)
	f := newStreamFixture(t, up)
	resp := f.open(context.Background(), t, nil)
	if resp == nil {
		t.FailNow()
	}
	defer resp.Body.Close()
	// The upstream holds back its second half: the client can have the
	// first half, all that is written.
	if _, err := io.ReadFull(resp.Body, make([]byte, up.size/2)); err != nil {
		t.Fatal(err)
	}
	storeTmp := filepath.Join(f.store.(*localfs.Store).Dir(), ".buildcache", "tmp")
	for _, dir := range []string{f.tempDir, tmp} {
		if files := tempFiles(t, dir); len(files) != 0 {
			t.Errorf("files outside the store while a blob streams, in %s: %v", dir, files)
		}
	}
	temps := tempFiles(t, storeTmp)
	if len(temps) != 1 {
		t.Fatalf("the store's temp files while a blob streams: %v, want one", temps)
	}
	info, err := os.Stat(filepath.Join(storeTmp, temps[0]))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() != up.size/2 {
		t.Errorf("the temp file holds %d bytes, want the %d sent so far", info.Size(), up.size/2)
	}
	ino := info.Sys().(*syscall.Stat_t).Ino
	close(up.gate)
	if n, d, err := readHashed(resp.Body); err != nil || n != up.size-up.size/2 {
		t.Fatalf("the rest: %d bytes of %s, %v", n, d, err)
	}
	info, err = os.Stat(filepath.Join(f.store.(*localfs.Store).Dir(), "blobs", "sha256", up.digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Sys().(*syscall.Stat_t).Ino; got != ino {
		t.Errorf("the stored blob is inode %d, the file the client read was %d: the blob was written twice", got, ino)
	}
	if got := f.store.(*localfs.Store).Stats().BytesIn; got != uint64(up.size) {
		t.Errorf("store BytesIn = %d, want %d", got, up.size)
	}
}

// An upstream that sends a blob with no Content-Length and never ends it
// (issue 19, item 1): once a manifest served under the name lists the
// blob, the download is bounded by the size it gives, however long the
// body; the blob fails verification, nothing is stored or left behind.
func TestEndlessBlobBoundedByManifestSize(t *testing.T) {
	h := testserver.StartHostile(t)
	layer := h.Blob(cachetest.NewBlob(801, 1<<20).Data)
	h.Endless(layer.Digest)
	cfg := h.Blob(testserver.ConfigJSON("linux", "amd64"))
	raw := testserver.ManifestJSON(cfg, layer)
	h.Manifest("team/app", "v1", types.OCIManifestSchema1, raw)
	store := newLocal(t)
	res := newResolver(t, store)
	m := newMirror(t, res, h.Host)
	srv := httptest.NewServer(m)
	defer srv.Close()

	if resp := get(t, srv.URL+"/v2/team/app/manifests/v1", http.Header{"Accept": {string(types.OCIManifestSchema1)}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the manifest: %s", resp.Status)
	} else {
		readAll(t, resp)
	}
	before := res.Stats().BytesFetched
	resp, err := http.Get(srv.URL + "/v2/team/app/blobs/" + layer.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := readHashed(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("a blob whose upstream body never ends was served complete (%d bytes)", n)
	}
	fetched := res.Stats().BytesFetched - before
	t.Logf("endless blob listed with %d bytes: %d bytes read from the upstream", layer.Size, fetched)
	if fetched > uint64(layer.Size)+1 {
		t.Errorf("%d bytes read from the upstream for a blob listed with %d", fetched, layer.Size)
	}
	expectNothingLeft(t, store, layer.Digest.Hex)
	if got := m.Stats().DigestMismatches; got != 1 {
		t.Errorf("digest mismatches counted: %d, want 1", got)
	}
}

// A download whose size nothing states stops when its last client leaves
// (issue 19, item 1): the upstream's connection is closed and the temp
// file removed, although the upstream would go on (here: silently, and
// the resolver would wait for it for ten minutes).
func TestEndlessBlobStopsWhenItsClientLeaves(t *testing.T) {
	h := testserver.StartHostile(t)
	layer := h.Blob(cachetest.NewBlob(802, 1<<20).Data)
	h.EndlessHold(layer.Digest, 2<<20)
	store := newLocal(t)
	res := newResolver(t, store, regclient.WithTimeouts(regclient.Timeouts{Stall: 10 * time.Minute}))
	m := newMirror(t, res, h.Host)
	srv := httptest.NewServer(m)
	defer srv.Close()

	ctx, leave := context.WithCancel(context.Background())
	defer leave()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v2/team/app/blobs/"+layer.Digest.String(), nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	wait, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := h.Await(wait, func() bool { _, held := h.Active(layer.Digest); return held == 1 }); err != nil {
		t.Fatalf("the upstream never sent its first %d bytes: %v", 2<<20, err)
	}
	leave()
	if err := h.Await(wait, func() bool { active, _ := h.Active(layer.Digest); return active == 0 }); err != nil {
		t.Fatalf("the download went on after its only client left (%v)", err)
	}
	// The upstream sees its connection closed a moment before the
	// ingestion it fed has removed its temp file.
	tmp := filepath.Join(store.Dir(), ".buildcache", "tmp")
	eventually(t, "the download's temp file removed", func() bool { return len(tempFiles(t, tmp)) == 0 })
	expectNothingLeft(t, store, layer.Digest.Hex)
}

// A blob that cannot fit in the store is answered 507 with an OCI error
// body, since that is known before the first byte, and the failure is
// logged with its reason and counted (issue 19, item 10).
func TestColdBlobNoRoomIs507(t *testing.T) {
	up := newBlobUpstream(t, 1<<20, false, false)
	f := newStreamFixtureOn(t, up, newLocal(t, localfs.WithMaxBytes(256<<10)))
	var log syncBuffer
	logged := httptest.NewServer(mirror.AccessLog(f.mirror, slog.New(slog.NewTextHandler(&log, nil))))
	defer logged.Close()
	resp, err := http.Get(logged.URL + "/v2/team/app/blobs/" + up.digest.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Errors []struct{ Code string } }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusInsufficientStorage || len(body.Errors) != 1 {
		t.Errorf("%s, body %+v (%v); want 507 with an OCI error", resp.Status, body, err)
	}
	if got := f.mirror.Stats().FailedResponses[mirror.ReasonNoSpace]; got != 1 {
		t.Errorf("failures counted for no_space: %d, want 1", got)
	}
	logged.Close() // the access log record is written
	if !strings.Contains(log.String(), "reason=no_space") {
		t.Errorf("access log has no reason=no_space:\n%s", log.String())
	}
}

// A client that asks for a blob and stops reading is cut once the stall
// timeout passes with no write taken (issue 19, item 12), stored or cold.
func TestStalledClientIsCut(t *testing.T) {
	for _, stored := range []bool{false, true} {
		name := map[bool]string{false: "cold", true: "stored"}[stored]
		t.Run(name, func(t *testing.T) {
			up := newBlobUpstream(t, 16<<20, false, false)
			f := newStreamFixture(t, up, mirror.WithStallTimeout(time.Second))
			if stored {
				if err := f.store.Put(context.Background(), up.digest, up.size, blobBytes(up.seed, up.size)); err != nil {
					t.Fatal(err)
				}
			}
			resp := f.open(context.Background(), t, nil)
			if resp == nil {
				t.FailNow()
			}
			defer resp.Body.Close()
			waitFor(t, f.handlerDone, "the handler of a client that reads nothing to give up")
			if got := f.mirror.Stats().FailedResponses[mirror.ReasonStalled]; got != 1 {
				t.Errorf("stalled responses counted: %d, want 1 (%v)", got, f.mirror.Stats().FailedResponses)
			}
		})
	}
}

func newLocal(t *testing.T, opts ...localfs.Option) *localfs.Store {
	t.Helper()
	s, err := localfs.Open(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newMirror(t *testing.T, res mirror.Upstream, host string, opts ...mirror.Option) *mirror.Mirror {
	t.Helper()
	m, err := mirror.New(res, append([]mirror.Option{mirror.WithUpstream(host)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// expectNothingLeft checks that blob hex is not stored and that the
// store's temp directory is empty.
func expectNothingLeft(t *testing.T, s *localfs.Store, hex string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(s.Dir(), "blobs", "sha256", hex)); !os.IsNotExist(err) {
		t.Errorf("the blob is stored (%v)", err)
	}
	if left := tempFiles(t, filepath.Join(s.Dir(), ".buildcache", "tmp")); len(left) != 0 {
		t.Errorf("temp files left in the store: %v", left)
	}
}

// syncBuffer is a bytes.Buffer for a logger writing from handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Distinct cold blobs asked for at once make at most
// WithMaxUpstreamFetches upstream downloads at a time; the others wait in
// line and are all served once those end (issue 19, item 11).
func TestUpstreamFetchesBounded(t *testing.T) {
	const blobs, limit = 12, 3
	var (
		mu            sync.Mutex
		inflight, top int
		byPath        = map[string][]byte{}
		gate          = make(chan struct{})
	)
	for i := range blobs {
		b := cachetest.NewBlob(uint64(900+i), 64<<10)
		byPath["/v2/team/app/blobs/"+b.Digest.String()] = b.Data
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := byPath[r.URL.Path]
		if !ok {
			return // the /v2/ ping
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if r.Method == http.MethodHead {
			return // the mirror asks whether the repository holds it
		}
		mu.Lock()
		inflight++
		top = max(top, inflight)
		mu.Unlock()
		defer func() { mu.Lock(); inflight--; mu.Unlock() }()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(data)
	}))
	defer up.Close()
	m := newMirror(t, newResolver(t, newLocal(t)), strings.TrimPrefix(up.URL, "http://"), mirror.WithMaxUpstreamFetches(limit))
	srv := httptest.NewServer(m)
	defer srv.Close()

	var wg sync.WaitGroup
	for p, data := range byPath {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + p)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if got, err := io.ReadAll(resp.Body); err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s: %s, %d bytes, %v", p, resp.Status, len(got), err)
			}
		})
	}
	eventually(t, "the bound's downloads under way and the others waiting", func() bool {
		mu.Lock()
		defer mu.Unlock()
		st := m.Stats()
		return inflight == limit && st.UpstreamFetchesWaiting == blobs-limit || top > limit
	})
	close(gate)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if top != limit {
		t.Errorf("at most %d upstream downloads at once, want %d", top, limit)
	}
}

// eventually waits for cond, checking it every few milliseconds, and fails
// the test when it does not hold within bound (a hang).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting (%v) for %s", bound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
