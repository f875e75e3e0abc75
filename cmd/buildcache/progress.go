package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"

	"github.com/buildcache/buildcache/registry"
)

// progress shows a pull's progress on stderr: a bar per image on a
// terminal, a log line per finished blob otherwise. A nil *progress shows
// nothing.
type progress struct {
	w   io.Writer
	tty bool

	mu    sync.Mutex // the resolver calls update from its download goroutines
	ref   string     // the image being resolved, as the user spelled it
	bar   *progressbar.ProgressBar
	blobs int // BlobsDone last logged
}

// newProgress returns nil (no progress) when stderr is not a terminal and
// log lines are not wanted.
func newProgress(w io.Writer, tty, logLines bool) *progress {
	if !tty && !logLines {
		return nil
	}
	return &progress{w: w, tty: tty}
}

// start is called before each image is resolved.
func (p *progress) start(ref string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ref, p.bar, p.blobs = ref, nil, -1
}

// update is the resolver's progress callback.
func (p *progress) update(pr registry.Progress) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	done := min(pr.BytesDone, pr.BytesTotal) // a retried blob counts twice
	if p.tty {
		if pr.BytesTotal <= 0 {
			return
		}
		if p.bar == nil {
			p.bar = progressbar.NewOptions64(pr.BytesTotal,
				progressbar.OptionSetWriter(p.w),
				progressbar.OptionSetDescription(fmt.Sprintf("%s (%d blobs)", p.ref, pr.BlobsTotal)),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionShowTotalBytes(true),
				progressbar.OptionUseIECUnits(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
			)
		}
		_ = p.bar.Set64(done)
		return
	}
	if pr.BlobsDone == p.blobs {
		return // bytes of a blob still downloading: one line per blob is enough
	}
	p.blobs = pr.BlobsDone
	if pr.BlobsDone == 0 {
		fmt.Fprintf(p.w, "pulling %s: %d blobs, %s\n", p.ref, pr.BlobsTotal, humanize.IBytes(uint64(pr.BytesTotal)))
		return
	}
	fmt.Fprintf(p.w, "pulling %s: %d/%d blobs, %s/%s\n", p.ref, pr.BlobsDone, pr.BlobsTotal,
		humanize.IBytes(uint64(done)), humanize.IBytes(uint64(pr.BytesTotal)))
}

// finish is called after each image is resolved: a bar is completed on
// success and left where it stopped on failure.
func (p *progress) finish(err error) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		return
	}
	if err == nil {
		_ = p.bar.Finish()
	} else {
		_ = p.bar.Exit()
	}
	p.bar = nil
}

// countBar shows a long gc or verify on a terminal: a bar of blobs done
// out of blobs found. A nil *countBar shows nothing.
type countBar struct {
	w    io.Writer
	desc string
	bar  *progressbar.ProgressBar
}

// countBar returns nil when stderr is not a terminal (or --json asks for
// machine output only on stdout, which a bar on stderr does not disturb).
func (a *app) countBar(desc string) *countBar {
	if !isTerminal(a.stderr) {
		return nil
	}
	return &countBar{w: a.stderr, desc: desc}
}

// update is GCProgress's and VerifyProgress's callback; the bar appears
// only once there is something to count.
func (c *countBar) update(done, total int) {
	if total <= 0 {
		return
	}
	if c.bar == nil {
		c.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(c.w),
			progressbar.OptionSetDescription(c.desc),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(c.w) }),
		)
	}
	_ = c.bar.Set(done)
}

// finish completes the bar, if one was shown.
func (c *countBar) finish() {
	if c != nil && c.bar != nil {
		_ = c.bar.Finish()
	}
}
