package mirror_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
)

// A mirror process killed (SIGKILL) while it streams a cold blob leaves
// its bytes only in the store's temp directory, where the next Open
// sweeps them; nothing in $TMPDIR, where nothing would (issue 19, item
// 9).
func TestKilledMirrorLeavesNoTempFile(t *testing.T) {
	up := newBlobUpstream(t, 4<<20, true, false)
	dir, tmp := t.TempDir(), t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMirrorHelperProcess$")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "MIRROR_HELPER_STORE="+dir, "MIRROR_HELPER_UPSTREAM="+strings.TrimPrefix(up.srv.URL, "http://"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the helper said no address: %v", err)
	}
	resp, err := http.Get("http://" + strings.TrimSpace(addr) + "/v2/team/app/blobs/" + up.digest.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, up.size/2)); err != nil {
		t.Fatal(err) // the upstream holds back the rest: half the blob is on disk
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	cmd.Wait()
	s, err := localfs.Open(dir, localfs.WithTempGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range []string{tmp, filepath.Join(dir, ".buildcache", "tmp")} {
		if left := tempFiles(t, d); len(left) != 0 {
			t.Errorf("after the kill and a new Open, %s holds %v", d, left)
		}
	}
}

// TestMirrorHelperProcess is the mirror TestKilledMirrorLeavesNoTempFile
// kills: it serves the store in MIRROR_HELPER_STORE, prints its address
// and serves until killed.
func TestMirrorHelperProcess(t *testing.T) {
	dir := os.Getenv("MIRROR_HELPER_STORE")
	if dir == "" {
		t.Skip("run by TestKilledMirrorLeavesNoTempFile")
	}
	store, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mirror.New(newResolver(t, store), mirror.WithUpstream(os.Getenv("MIRROR_HELPER_UPSTREAM")))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString(l.Addr().String() + "\n")
	t.Fatal(http.Serve(l, m)) // until killed
}
