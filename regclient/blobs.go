package regclient

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

// The blob calls of a writer, a repository-backed cache (package ocirepo),
// all with push scope, so that its reads and writes share one login.

// HeadBlob returns the size of blob d of repo (-1 if the registry does not
// say), or found false when the registry answers 404. It asks with push
// scope.
func (c *Client) HeadBlob(ctx context.Context, repo name.Repository, d v1.Hash) (size int64, found bool, err error) {
	resp, err := c.Do(ctx, Request{
		Method: http.MethodHead, Repo: repo, Kind: "blobs", Ref: d.String(), Push: true,
		OK: []int{http.StatusOK, http.StatusNotFound},
	})
	if err != nil {
		return 0, false, err
	}
	Drain(resp)
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

// UploadBlob streams body to repo as blob d in one monolithic upload:
// POST to open it (and to meet any auth challenge while there is no body
// to replay), then PUT with the digest, never retried: body is read once.
// size < 0 sends the body chunked. The registry checks the digest before
// it commits the blob; the caller checks the bytes it sends, if it must.
func (c *Client) UploadBlob(ctx context.Context, repo name.Repository, d v1.Hash, size int64, body io.Reader) error {
	const op = "POST blob upload"
	resp, err := c.Do(ctx, Request{
		Op: op, Method: http.MethodPost, Repo: repo, Kind: "blobs", Ref: "uploads/", Push: true,
		OK: []int{http.StatusAccepted},
	})
	if err != nil {
		return err
	}
	loc := resp.Header.Get("Location")
	Drain(resp)
	start := c.URL(repo, "blobs", "uploads/")
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
	resp, err = c.Do(ctx, Request{
		Op: "PUT blob", Method: http.MethodPut, Repo: repo, Kind: "blobs", Ref: "uploads/", URL: u.String(), Push: true,
		Header: http.Header{"Content-Type": {"application/octet-stream"}}, Stream: body, Size: size,
		OK: []int{http.StatusCreated},
	})
	if err != nil {
		return err
	}
	Drain(resp)
	return nil
}

// DeleteBlob asks the registry to delete blob d of repo, once, and
// ignores the answer: registries often do not allow it (405, UNSUPPORTED,
// DENIED), so a caller must not rely on it.
func (c *Client) DeleteBlob(ctx context.Context, repo name.Repository, d v1.Hash) {
	resp, err := c.Do(ctx, Request{
		Method: http.MethodDelete, Repo: repo, Kind: "blobs", Ref: d.String(), Push: true, Once: true,
		OK: []int{http.StatusAccepted, http.StatusOK, http.StatusNoContent, http.StatusNotFound, http.StatusMethodNotAllowed},
	})
	if err == nil {
		Drain(resp)
	}
}
