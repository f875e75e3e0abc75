package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/buildcache/buildcache/regclient"
)

// TagList is one page of a repository's tags, as the registry lists them.
type TagList struct {
	Tags []string
	// More is whether the registry said that more tags follow (a Link
	// header with rel="next"): they come after the last of Tags.
	More bool
}

// maxTagListBytes bounds a tag list read from a registry: 16 MiB is some
// 500,000 tags, more than any repository has; a longer answer is broken
// or hostile.
const maxTagListBytes = 16 << 20

// ListTags asks the registry for repo's tags ("registry:5000/team/app"),
// with one GET of /v2/<name>/tags/list: at most n of them (n < 0: as many
// as the registry gives), starting after last ("" from the start), as the
// distribution spec pages them. A repository the registry does not know
// is a *regclient.RemoteError with status 404. Nothing is stored.
func (r *Resolver) ListTags(ctx context.Context, repo string, n int, last string) (*TagList, error) {
	rp, err := name.NewRepository(repo)
	if err != nil {
		return nil, fmt.Errorf("registry: invalid repository %q: %w", repo, err)
	}
	q := url.Values{}
	if n >= 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if last != "" {
		q.Set("last", last)
	}
	ref := "list"
	if len(q) > 0 {
		ref += "?" + q.Encode()
	}
	resp, err := r.client.Do(ctx, regclient.Request{Op: "GET tags", Method: http.MethodGet, Repo: rp, Kind: "tags", Ref: ref})
	if err != nil {
		return nil, regclient.MarkOffline(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTagListBytes+1))
	if err != nil {
		return nil, &regclient.RemoteError{Op: "GET tags", URL: r.client.URL(rp, "tags", ref), Err: err}
	}
	if len(b) > maxTagListBytes {
		return nil, fmt.Errorf("registry: the tag list of %s is larger than %d bytes", repo, maxTagListBytes)
	}
	var body struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("registry: the tag list of %s is not JSON: %w", repo, err)
	}
	return &TagList{Tags: body.Tags, More: hasNext(resp.Header.Values("Link"))}, nil
}

// hasNext reports whether Link headers hold a rel="next" link (RFC 8288).
func hasNext(links []string) bool {
	for _, h := range links {
		for _, link := range strings.Split(h, ",") {
			_, params, _ := strings.Cut(link, ">")
			for _, p := range strings.Split(params, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(k, "rel") && strings.EqualFold(strings.Trim(v, `"`), "next") {
					return true
				}
			}
		}
	}
	return false
}
