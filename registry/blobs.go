package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The blob calls a LayerCache makes, all with push scope.

// headBlob returns the size of blob d (-1 if the registry does not say),
// or found false.
func (c *client) headBlob(ctx context.Context, repo name.Repository, d v1.Hash) (size int64, found bool, err error) {
	resp, err := c.do(ctx, request{
		method: http.MethodHead, repo: repo, kind: "blobs", ref: d.String(), push: true,
		ok: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return 0, false, err
	}
	drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return 0, false, nil
	}
	size = resp.ContentLength
	if size < 0 {
		if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil {
			size = n
		}
	}
	return size, true, nil
}

// upload streams body to the registry as blob d in one monolithic upload:
// POST to open it (and to meet any auth challenge while there is no body
// to replay), then PUT with the digest, never retried. size < 0 sends the
// body chunked.
func (c *client) upload(ctx context.Context, repo name.Repository, d v1.Hash, size int64, body io.Reader) error {
	const op = "POST blob upload"
	resp, err := c.do(ctx, request{
		op: op, method: http.MethodPost, repo: repo, kind: "blobs", ref: "uploads/", push: true,
		ok: []int{http.StatusAccepted},
	})
	if err != nil {
		return err
	}
	loc := resp.Header.Get("Location")
	drain(resp)
	start := c.url(repo, "blobs", "uploads/")
	if loc == "" {
		return &RemoteError{Op: op, URL: start, Status: resp.StatusCode, Err: errors.New("no Location in the answer")}
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return &RemoteError{Op: op, URL: start, Status: resp.StatusCode, Err: fmt.Errorf("bad Location: %w", err)}
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	// The upload URL may carry the registry's upload state: errors name
	// the start URL instead.
	resp, err = c.do(ctx, request{
		op: "PUT blob", method: http.MethodPut, repo: repo, kind: "blobs", ref: "uploads/", url: u.String(), push: true,
		header: http.Header{"Content-Type": {"application/octet-stream"}}, stream: body, size: size,
		ok: []int{http.StatusCreated},
	})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// deleteBlob asks the registry to delete blob d, once, and ignores the
// answer: registries often do not allow it, and the entry is gone from the
// index already.
func (c *client) deleteBlob(ctx context.Context, repo name.Repository, d v1.Hash) {
	resp, err := c.do(ctx, request{
		method: http.MethodDelete, repo: repo, kind: "blobs", ref: d.String(), push: true, once: true,
		ok: []int{http.StatusAccepted, http.StatusOK, http.StatusNoContent, http.StatusNotFound, http.StatusMethodNotAllowed},
	})
	if err == nil {
		drain(resp)
	}
}
