package nodeconfig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// How WaitReady polls.
const (
	readyInterval   = 250 * time.Millisecond
	readyTryTimeout = 5 * time.Second
)

// WaitReady asks mirror's /readyz ("http://127.0.0.1:5000/readyz") until
// it answers 200, every 250 ms (each try bounded by 5 s), and returns
// nil; or, when ctx ends first, an error saying what the last try got
// (connection refused, 503 and the mirror's reason). client nil: a plain
// http.Client. Apply only after it returns nil, so that a node never
// points containerd at a mirror that is not there.
func WaitReady(ctx context.Context, mirror string, client *http.Client) error {
	base, err := endpoint("mirror", mirror)
	if err != nil {
		return err
	}
	if client == nil {
		client = &http.Client{}
	}
	url := base + "/readyz"
	start := time.Now()
	tick := time.NewTicker(readyInterval)
	defer tick.Stop()
	var last error
	for {
		err := tryReady(ctx, client, url)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil { // a try cut by ctx's end says less than the one before
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodeconfig: %s not ready after %v: %w", url, time.Since(start).Round(time.Millisecond), last)
		case <-tick.C:
		}
	}
}

// errNotReady is a /readyz that answered, not 200.
var errNotReady = errors.New("not ready")

func tryReady(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return fmt.Errorf("%w: %s %q", errNotReady, resp.Status, strings.TrimSpace(string(body)))
}
