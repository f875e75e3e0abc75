package ocirepo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	rand "math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/ctxio"
	"github.com/buildcache/buildcache/regclient"
)

const (
	// maxIndexAttempts bounds the read-modify-write rounds of one index
	// update before it gives up with errIndexContention.
	maxIndexAttempts = 10

	// maxSettle caps the wait before an index write is verified.
	maxSettle = 2 * time.Second
)

// errIndexContention: an index update kept losing to other writers.
var errIndexContention = errors.New("the index kept changing under this update")

// Index updates are queued, merged and written one batch at a time: an
// edit joins the open batch, and the batch is written when the write
// before it is done, so edits that arrive while one write is under way are
// merged into the next. Callers wait for their batch through a
// flight.Group keyed by its number: the write's context ends only when
// every caller waiting for it has given up.

// indexEdit adds d to the index (add) or removes it.
type indexEdit struct {
	d    v1.Hash
	add  bool
	size int64

	existed bool  // result: d was listed just before the edit
	err     error // result
	done    chan struct{}
}

// indexBatch is the edits one index write applies.
type indexBatch struct {
	seq   uint64
	edits []*indexEdit
	taken bool // a write has begun applying it; under qmu
}

// edit applies one change to the index and waits until it is written and
// verified. If ctx ends while the edit is still queued, it is withdrawn
// and nothing changes.
func (c *Cache) edit(ctx context.Context, d v1.Hash, add bool, size int64) (existed bool, err error) {
	e := &indexEdit{d: d, add: add, size: size, done: make(chan struct{})}
	c.qmu.Lock()
	if c.open == nil {
		c.seq++
		c.open = &indexBatch{seq: c.seq}
	}
	b := c.open
	b.edits = append(b.edits, e)
	c.qmu.Unlock()

	for {
		_, _, err := c.writes.Do(ctx, b.seq, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, c.write(ctx, b)
		})
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			<-e.done // closed already: the write that took the batch has returned
			return e.existed, e.err
		}
		// The call joined had been given up by all its callers before it
		// took the batch: start another.
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if !b.taken {
		b.edits = slices.DeleteFunc(b.edits, func(x *indexEdit) bool { return x == e })
		return false, context.Cause(ctx)
	}
	select {
	case <-e.done:
		return e.existed, e.err
	default:
	}
	return false, fmt.Errorf("%w (the index update was under way and may still take effect)", context.Cause(ctx))
}

// write waits for the write before it, then takes batch b and applies it.
// It fails only if ctx ends before it took the batch.
func (c *Cache) write(ctx context.Context, b *indexBatch) error {
	select {
	case c.writing <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-c.writing }()
	c.qmu.Lock()
	if b.taken { // a caller that started this call anew after it was done
		c.qmu.Unlock()
		return nil
	}
	b.taken = true
	if c.open == b {
		c.open = nil
	}
	edits := b.edits
	c.qmu.Unlock()
	if len(edits) > 0 {
		c.apply(ctx, edits)
	}
	for _, e := range edits {
		close(e.done)
	}
	return nil
}

// apply writes edits to the index: read, merge, conditional PUT, wait,
// read back; again while another writer has dropped one of its entries.
func (c *Cache) apply(ctx context.Context, edits []*indexEdit) {
	live := edits // edits not yet failed
	failAll := func(err error) {
		for _, e := range live {
			e.err = err
		}
	}
	gone := map[v1.Hash]bool{} // blobs the registry says it does not have
	for attempt := 1; ; attempt++ {
		if attempt > maxIndexAttempts {
			failAll(fmt.Errorf("%w: gave up after %d rounds", errIndexContention, maxIndexAttempts))
			return
		}
		if attempt > 1 {
			if err := ctxio.Sleep(ctx, indexBackoff(attempt)); err != nil {
				failAll(err)
				return
			}
		}
		start := time.Now()
		st, err := c.index(ctx)
		if err != nil {
			failAll(err)
			return
		}
		next := make(map[v1.Hash]int64, len(st.entries)+len(live))
		for d, n := range st.entries {
			next[d] = n
		}
		for _, e := range live {
			_, e.existed = next[e.d]
			if e.add {
				next[e.d] = e.size
			} else {
				delete(next, e.d)
			}
		}
		for d := range gone {
			if _, ok := next[d]; ok {
				delete(next, d)
				c.stats.Evictions.Add(1)
			}
		}
		if maps.Equal(next, st.entries) {
			return // every edit holds already
		}
		body := encodeIndex(next)
		if len(body) > maxIndexBytes {
			// Full: refuse the additions, keep the rest.
			live = slices.DeleteFunc(live, func(e *indexEdit) bool {
				if e.add && !e.existed {
					e.err = fmt.Errorf("the index %s would exceed %d bytes: %w", c.tag, maxIndexBytes, cache.ErrNoSpace)
					return true
				}
				return false
			})
			attempt--
			continue
		}
		if err := c.ensureConfig(ctx); err != nil {
			failAll(err)
			return
		}
		written, conflict, unknown, err := c.putIndex(ctx, body, st)
		switch {
		case conflict:
			continue
		case unknown != nil:
			missing, ferr := c.findMissing(ctx, next, unknown)
			if ferr != nil || len(missing) == 0 {
				failAll(err)
				return
			}
			for _, d := range missing {
				if d == emptyJSON.Digest {
					c.configOK.Store(false)
					continue
				}
				gone[d] = true
			}
			live = slices.DeleteFunc(live, func(e *indexEdit) bool {
				if e.add && gone[e.d] {
					e.err = fmt.Errorf("the registry lost %s before it was indexed", e.d)
					return true
				}
				return false
			})
			continue
		case err != nil:
			failAll(err)
			return
		}
		c.setCurrent(&indexState{digest: written, entries: next})

		if err := ctxio.Sleep(ctx, c.settle(time.Since(start))); err != nil {
			failAll(err)
			return
		}
		after, err := c.index(ctx)
		if err != nil {
			failAll(err)
			return
		}
		if after.digest == written || addsHold(after, live) {
			return
		}
		// Another writer's stale write dropped some of ours: merge again.
	}
}

// addsHold reports whether every addition in edits is listed in st.
// Removals are not checked: a writer that lists the blob again may have
// put it again, which is as good a final state.
func addsHold(st *indexState, edits []*indexEdit) bool {
	for _, e := range edits {
		if _, ok := st.entries[e.d]; e.add && !ok {
			return false
		}
	}
	return true
}

func (c *Cache) settle(rmw time.Duration) time.Duration {
	if c.o.settle == 0 {
		return 0
	}
	return min(max(c.o.settle, 2*rmw), maxSettle)
}

// indexBackoff is a random wait before merge round attempt, so that
// writers that collided do not collide again.
func indexBackoff(attempt int) time.Duration {
	ceiling := min(10*time.Millisecond<<attempt, time.Second)
	return time.Duration(rand.Int64N(int64(ceiling))) + time.Millisecond
}

// putIndex writes body at the index tag, on condition that the tag still
// holds the version read (st), for registries that honour the condition.
// conflict: the registry says it does not. unknown: the registry refused
// the manifest because it lacks some of its blobs (possibly naming them).
func (c *Cache) putIndex(ctx context.Context, body []byte, st *indexState) (written v1.Hash, conflict bool, unknown []v1.Hash, err error) {
	hdr := http.Header{"Content-Type": {string(types.OCIManifestSchema1)}}
	switch {
	case st.digest.Hex == "":
		hdr.Set("If-None-Match", "*")
	case st.etag != "":
		hdr.Set("If-Match", st.etag)
	}
	resp, err := c.client.Do(ctx, regclient.Request{
		Op: "PUT index", Method: http.MethodPut, Repo: c.repo, Kind: "manifests", Ref: c.tag.TagStr(), Push: true,
		Header: hdr, Body: body, OK: []int{http.StatusCreated, http.StatusOK, http.StatusAccepted, http.StatusPreconditionFailed},
	})
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) {
			for _, diag := range terr.Errors {
				if diag.Code == transport.ManifestBlobUnknownErrorCode || diag.Code == transport.BlobUnknownErrorCode {
					if unknown == nil {
						unknown = []v1.Hash{}
					}
					unknown = append(unknown, digestsIn(diag.Detail)...)
				}
			}
		}
		return v1.Hash{}, false, unknown, err
	}
	regclient.Drain(resp)
	if resp.StatusCode == http.StatusPreconditionFailed {
		return v1.Hash{}, true, nil, nil
	}
	sum := sha256.Sum256(body)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, false, nil, nil
}

// digestsIn finds digests in an error's detail: distribution puts the
// digest there as a string, others as {"digest": ...}.
func digestsIn(detail any) []v1.Hash {
	var out []v1.Hash
	switch v := detail.(type) {
	case string:
		if h, err := v1.NewHash(v); err == nil {
			out = append(out, h)
		}
	case map[string]any:
		for _, x := range v {
			out = append(out, digestsIn(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, digestsIn(x)...)
		}
	}
	return out
}

// findMissing returns the blobs of entries (and the config) the registry
// does not have: named, if the registry named any we list, or else found
// with a HEAD of each.
func (c *Cache) findMissing(ctx context.Context, entries map[v1.Hash]int64, named []v1.Hash) ([]v1.Hash, error) {
	var out []v1.Hash
	for _, d := range named {
		if _, ok := entries[d]; ok || d == emptyJSON.Digest {
			out = append(out, d)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for d := range entries {
		g.Go(func() error {
			_, found, err := c.client.HeadBlob(gctx, c.repo, d)
			if err == nil && !found {
				mu.Lock()
				out = append(out, d)
				mu.Unlock()
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	c.configOK.Store(false) // it may be the config; ensureConfig checks again
	return out, nil
}

// ensureConfig uploads the index's config blob ("{}") once per Cache:
// registries refuse a manifest whose config they do not have.
func (c *Cache) ensureConfig(ctx context.Context) error {
	if c.configOK.Load() {
		return nil
	}
	_, found, err := c.client.HeadBlob(ctx, c.repo, emptyJSON.Digest)
	if err != nil {
		return err
	}
	if !found {
		if err := c.client.UploadBlob(ctx, c.repo, emptyJSON.Digest, emptyJSON.Size, bytes.NewReader(emptyJSON.Data)); err != nil {
			return err
		}
	}
	c.configOK.Store(true)
	return nil
}
