package registry

import (
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

type progressReporter struct {
	mu sync.Mutex
	p  Progress
	fn func(Progress)
}

func newProgressReporter(ref string, todo []v1.Descriptor, fn func(Progress)) *progressReporter {
	pr := &progressReporter{fn: fn, p: Progress{Ref: ref, BlobsTotal: len(todo)}}
	for _, d := range todo {
		pr.p.BytesTotal += d.Size
	}
	if fn != nil && len(todo) > 0 {
		fn(pr.p)
	}
	return pr
}

func (pr *progressReporter) add(n int64) {
	if pr == nil || pr.fn == nil {
		return
	}
	pr.mu.Lock()
	pr.p.BytesDone += n
	pr.fn(pr.p)
	pr.mu.Unlock()
}

func (pr *progressReporter) blobDone() {
	if pr == nil || pr.fn == nil {
		return
	}
	pr.mu.Lock()
	pr.p.BlobsDone++
	pr.fn(pr.p)
	pr.mu.Unlock()
}
