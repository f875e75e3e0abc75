package mirror_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/testimage"
	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
)

// listTags GETs a tag list from the mirror: its tags, and the Link
// header's URL of the next page ("" on the last page).
func listTags(t *testing.T, base, path string) (tags []string, next string) {
	t.Helper()
	resp := get(t, base+path, nil)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	var list struct {
		Name string
		Tags []string
	}
	if err := json.Unmarshal(body, &list); err != nil || list.Tags == nil {
		t.Fatalf("GET %s: %q is not a tag list (%v)", path, body, err)
	}
	if link := resp.Header.Get("Link"); link != "" {
		u, rel, ok := strings.Cut(strings.TrimPrefix(link, "<"), ">")
		if !ok || rel != `; rel="next"` {
			t.Fatalf("GET %s: Link %q is not a next link", path, link)
		}
		next = u
	}
	return list.Tags, next
}

// allPages follows the Link headers from path and returns every tag, and
// the size of each page.
func allPages(t *testing.T, base, path string) (tags []string, pages []int) {
	t.Helper()
	for path != "" && len(pages) < 20 {
		page, next := listTags(t, base, path)
		tags, pages, path = append(tags, page...), append(pages, len(page)), next
	}
	return tags, pages
}

// The tag list comes from the upstream (a real docker-registry), paged by
// n and last with Link headers as the distribution spec says, whatever
// the upstream's own paging.
func TestTagListFromUpstream(t *testing.T) {
	reg := testserver.StartRegistry(t)
	ti := testimage.ForTest(t)
	img := ti.RandomIndex(platforms, 1<<10, 1)
	want := []string{"1.0", "1.1", "2.0", "latest", "v1"}
	for _, tag := range want {
		ti.Push(reg.Host+"/team/app:"+tag, img)
	}
	m := startLocalMirror(t, reg.Host)
	base := m.srv.URL

	if tags, next := listTags(t, base, "/v2/team/app/tags/list"); !slices.Equal(tags, want) || next != "" {
		t.Fatalf("tags/list = %v, next %q; want %v and no next page", tags, next, want)
	}
	tags, pages := allPages(t, base, "/v2/team/app/tags/list?n=2")
	if !slices.Equal(tags, want) || !slices.Equal(pages, []int{2, 2, 1}) {
		t.Fatalf("tags/list by 2: %v in pages of %v, want %v in pages of 2, 2, 1", tags, pages, want)
	}
	if tags, next := listTags(t, base, "/v2/team/app/tags/list?n=2&last=1.1"); !slices.Equal(tags, want[2:4]) || !strings.Contains(next, "last=latest") {
		t.Fatalf("tags/list after 1.1 by 2: %v, next %q; want %v and a next page after latest", tags, next, want[2:4])
	}
	if tags, next := listTags(t, base, "/v2/team/app/tags/list?n=0"); len(tags) != 0 || next != "" {
		t.Fatalf("tags/list?n=0: %v, next %q; want none", tags, next)
	}
	if n := m.upstream.counts(); n["GET tags"] == 0 {
		t.Fatalf("the tag lists asked the upstream nothing: %v", n)
	}
	for path, want := range map[string]int{
		"/v2/team/app/tags/list?n=-1":  http.StatusBadRequest,
		"/v2/team/app/tags/list?n=x":   http.StatusBadRequest,
		"/v2/team/none/tags/list":      http.StatusNotFound,
		"/v2/team/app/tags/list/extra": http.StatusNotFound,
	} {
		resp := get(t, base+path, nil)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// countingIndex counts the reads of a store's whole index.
type countingIndex struct {
	*localfs.Store
	reads atomic.Int64
}

func (c *countingIndex) Index(ctx context.Context) (*v1.IndexManifest, error) {
	c.reads.Add(1)
	return c.Store.Index(ctx)
}

// With the upstream down, the tag list is what the store's roots hold for
// the repository: the tags this mirror, or an earlier one over the same
// store, resolved. The roots are read once, not once per request.
func TestTagListWithUpstreamDown(t *testing.T) {
	up := newUpstream(t)
	ti := testimage.ForTest(t)
	img := ti.RandomIndex(platforms, 1<<10, 1)
	for _, tag := range []string{"v1", "v2", "v3"} {
		ti.Push(up.host()+"/team/app:"+tag, img)
	}
	ti.Push(up.host()+"/team/other:v9", img)
	dir := t.TempDir()
	store, err := localfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	first := startMirror(t, up.host(), store)
	for _, ref := range []string{"/team/app:v1", "/team/app:v2", "/team/other:v9"} {
		pullAll(t, first.host()+ref)
	}

	// A mirror started anew over the same store, the upstream down.
	up.down.Store(true)
	counted := &countingIndex{Store: store}
	second := startMirror(t, up.host(), counted)
	for range 20 {
		if tags, next := listTags(t, second.srv.URL, "/v2/team/app/tags/list"); !slices.Equal(tags, []string{"v1", "v2"}) || next != "" {
			t.Fatalf("tags/list with the upstream down: %v, next %q; want the stored v1 and v2", tags, next)
		}
	}
	tags, pages := allPages(t, second.srv.URL, "/v2/team/app/tags/list?n=1")
	if !slices.Equal(tags, []string{"v1", "v2"}) || !slices.Equal(pages, []int{1, 1}) {
		t.Fatalf("tags/list by 1 with the upstream down: %v in pages of %v", tags, pages)
	}
	if n := counted.reads.Load(); n != 1 {
		t.Errorf("22 tag lists read the store's index %d times, want once", n)
	}
	if n := second.upstream.counts(); n["GET tags"] == 0 {
		t.Errorf("the upstream was not asked first: %v", n)
	}
	// A tag this mirror serves shows at once, with no read of the index.
	up.down.Store(false)
	pullAll(t, second.host()+"/team/app:v3")
	up.down.Store(true)
	if tags, _ := listTags(t, second.srv.URL, "/v2/team/app/tags/list"); !slices.Equal(tags, []string{"v1", "v2", "v3"}) {
		t.Fatalf("tags/list after v3 was served, upstream down: %v, want v1 to v3", tags)
	}
	if n := counted.reads.Load(); n != 1 {
		t.Errorf("the tag lists read the store's index %d times, want once", n)
	}
	resp := get(t, second.srv.URL+"/v2/team/unknown/tags/list", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("tags/list of a repository with nothing stored, upstream down: %d, want 503", resp.StatusCode)
	}
}

// skopeo inspect lists the repository's tags: through the mirror it
// works with the upstream (a real docker-registry) up, and down.
func TestSkopeoInspectThroughMirror(t *testing.T) {
	skopeo := requireTool(t, "BUILDCACHE_SKOPEO_BIN", "skopeo", "apt-get install -y skopeo")
	reg, _ := realUpstream(t)
	ti := testimage.ForTest(t)
	ti.Push(reg.Host+"/base:v2", ti.RandomIndex(platforms, 1<<10, 1))
	m := startLocalMirror(t, reg.Host)
	inspect := func(what string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, skopeo, "inspect", "--tls-verify=false", "--override-os", "linux", "--override-arch", "amd64",
			"docker://"+m.host()+"/base:v1")
		cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s: skopeo inspect: %v\n%s", what, err, stderr)
		}
		var info struct{ RepoTags []string }
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatalf("%s: skopeo inspect printed %q: %v", what, out, err)
		}
		return info.RepoTags
	}
	if tags := inspect("upstream up"); !slices.Equal(tags, []string{"v1", "v2"}) {
		t.Fatalf("upstream up: RepoTags %v, want the upstream's v1 and v2", tags)
	}
	reg.Stop()
	if tags := inspect("upstream down"); !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("upstream down: RepoTags %v, want the stored v1", tags)
	}
}

// A Link keeps the request's ?ns= and the name the client asked for.
func TestTagListLinkKeepsNamespace(t *testing.T) {
	up := newUpstream(t)
	ti := testimage.ForTest(t)
	img := ti.RandomIndex(platforms, 1<<10, 1)
	for _, tag := range []string{"a", "b"} {
		ti.Push(up.host()+"/library/busy:"+tag, img)
	}
	store, err := localfs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := mirror.New(newResolver(t, store), mirror.WithUpstreams(map[string]string{"docker.io": up.host()}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	defer srv.Close()
	tags, next := listTags(t, srv.URL, "/v2/busy/tags/list?ns=docker.io&n=1")
	if !slices.Equal(tags, []string{"a"}) || next != "/v2/busy/tags/list?last=a&n=1&ns=docker.io" {
		t.Fatalf("busy by 1 with ns=docker.io: %v, next %q", tags, next)
	}
	if tags, next := listTags(t, srv.URL, next); !slices.Equal(tags, []string{"b"}) || next != "" {
		t.Fatalf("the next page: %v, next %q; want b and no more", tags, next)
	}
}

var _ cache.RootIndex = (*countingIndex)(nil)
