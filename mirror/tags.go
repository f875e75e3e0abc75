package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/regclient"
)

// codePaginationInvalid is distribution's answer to an n that is not a
// number of tags.
const codePaginationInvalid = "PAGINATION_NUMBER_INVALID"

// serveTags answers GET /v2/<name>/tags/list[?n=&last=]: the upstream's
// list, or, when the upstream cannot answer, the tags the store's roots
// hold for the repository. Either way the page is cut to n tags after
// last, in lexical order, with a Link to the next page when there is
// one, as the distribution spec pages it; an upstream that ignores n or
// last, or sends no Link, is paged here.
func (m *Mirror) serveTags(ctx context.Context, w http.ResponseWriter, req *http.Request, repo, name string) {
	q := req.URL.Query()
	n := -1
	if s := q.Get("n"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, codePaginationInvalid, "n is not a number of tags")
			return
		}
	}
	last := q.Get("last")
	var (
		tags []string
		more bool
	)
	ask := n
	if n > 0 && n < math.MaxInt {
		ask = n + 1 // one more tells whether a next page exists, for an upstream sending no Link
	}
	list, err := m.up.ListTags(ctx, repo, ask, last)
	switch {
	case err == nil:
		tags, more = list.Tags, list.More
	case upstreamDown(err):
		stored, _, serr := m.tags.of(ctx, m.store, repo)
		if serr != nil || len(stored) == 0 {
			upstreamError(w, err, codeNameUnknown)
			return
		}
		for t := range stored {
			tags = append(tags, t)
		}
	case refused(err):
		writeError(w, http.StatusNotFound, codeNameUnknown, "repository not known upstream")
		return
	default:
		upstreamError(w, err, codeNameUnknown)
		return
	}
	tags, cut := pageOf(tags, n, last)
	body, err := json.Marshal(tagList{Name: name, Tags: tags})
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnavailable, "internal error")
		return
	}
	h := w.Header()
	if (cut || more) && n != 0 && len(tags) > 0 {
		h.Set("Link", nextLink(req, name, n, tags[len(tags)-1]))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// pageOf sorts tags and returns those after last, at most n of them
// (n < 0: all), and whether it left some out.
func pageOf(tags []string, n int, last string) (page []string, cut bool) {
	slices.Sort(tags)
	if last != "" {
		i, found := slices.BinarySearch(tags, last)
		if found {
			i++
		}
		tags = tags[i:]
	}
	if n >= 0 && len(tags) > n {
		return tags[:n], true
	}
	if tags == nil {
		tags = []string{} // "tags": [], not null
	}
	return tags, false
}

// nextLink is the Link header of the page after last, on this mirror, for
// the same name, n and upstream (?ns=).
func nextLink(req *http.Request, name string, n int, last string) string {
	q := url.Values{"last": {last}}
	if n > 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if ns := req.URL.Query().Get("ns"); ns != "" {
		q.Set("ns", ns)
	}
	return "</v2/" + name + "/tags/list?" + q.Encode() + `>; rel="next"`
}

// upstreamDown reports whether err is an upstream that could not answer
// (unreachable, timed out, 5xx, 429) rather than one that answered no.
func upstreamDown(err error) bool {
	var re *regclient.RemoteError
	return errors.Is(err, cache.ErrOffline) || errors.Is(err, ErrClosed) || (errors.As(err, &re) && re.Temporary())
}

// refused reports whether err is the upstream saying that a repository,
// or a digest in it, is not there for the mirror's credentials: 404, or
// 401 and 403 as distribution answers for a repository one may not read.
func refused(err error) bool {
	var re *regclient.RemoteError
	if !errors.As(err, &re) {
		return false
	}
	switch re.Status {
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
		return true
	}
	return false
}

// tagsRoute reports whether a route() is the tag list's: "tags", "list".
func tagsRoute(kind, ref string) bool { return kind == "tags" && ref == "list" }
