package registry

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/rootindex"
)

// persistInterval bounds how stale a revalidation time in the index may
// be; after a crash or restart that costs at most one extra HEAD.
const persistInterval = time.Minute

// record is what the store's index says about a reference.
type record struct {
	desc       v1.Descriptor
	resolvedAt time.Time // as the index records it
	latest     time.Time // a later revalidation not yet written, if any
	claimed    bool      // this process claimed its revalidation from the shared records: fleet.go
}

// lastChecked is when the reference was last known to point to desc.
func (rec *record) lastChecked() time.Time {
	if rec.latest.After(rec.resolvedAt) {
		return rec.latest
	}
	return rec.resolvedAt
}

func (r *Resolver) lookup(ctx context.Context, refName string) (*record, error) {
	d, ok, err := r.root(ctx, refName)
	if err != nil || !ok {
		return nil, err
	}
	at, _ := time.Parse(time.RFC3339Nano, d.Annotations[cache.AnnotationResolvedAt])
	rec := &record{desc: d, resolvedAt: at}
	r.mu.Lock()
	if t, ok := r.checked[refName]; ok && t.After(at) {
		rec.latest = t
	}
	r.mu.Unlock()
	return rec, nil
}

// root finds refName's root: by one lookup when the index offers it
// (cache.RootLookup; localfs and tier do), else by a scan of the index.
func (r *Resolver) root(ctx context.Context, refName string) (v1.Descriptor, bool, error) {
	return rootindex.Lookup(ctx, r.index, refName)
}

// revalidated notes that refName still points to rec's digest, writing the
// index only when its recorded time is older than persistInterval.
func (r *Resolver) revalidated(ctx context.Context, refName string, rec *record) error {
	now := r.o.now()
	if now.Sub(rec.resolvedAt) < persistInterval && !rec.resolvedAt.After(now) && !rec.claimed {
		r.mu.Lock()
		r.checked[refName] = now
		r.mu.Unlock()
		return nil
	}
	err := r.remember(ctx, refName, rec.desc)
	if err != nil && readOnly(err) {
		// A read-only store still answers: nothing changed but the time,
		// which is kept in memory and costs at most one extra HEAD later.
		r.mu.Lock()
		r.checked[refName] = now
		r.mu.Unlock()
		r.stats.unrecorded.Add(1)
		return nil
	}
	return err
}

// readOnly reports whether err is a store refusing a write because it is
// read-only (a read-only mount, or a directory the process may not write).
func readOnly(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission)
}

// lease makes the store's collectors, in every process, keep what the
// pull with the returned context writes or looks at until release, which
// the pull calls once its root is recorded (or it failed). A store that
// cannot lease (cache.Leaser) is returned ctx unchanged.
func (r *Resolver) lease(ctx context.Context) (leased context.Context, release func(), err error) {
	l, ok := cache.As[cache.Leaser](r.store)
	if !ok {
		return ctx, func() {}, nil
	}
	leased, end, err := l.Lease(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("registry: %w", err)
	}
	return leased, func() { _ = end() }, nil // a lease left behind expires with the process
}

// rememberComplete records refName -> top after checking, under the
// pull's lease, that the store holds all of the image for platforms: a
// root is only ever recorded for a complete image.
func (r *Resolver) rememberComplete(ctx context.Context, refName string, top v1.Descriptor, platforms []string) error {
	if _, err := r.complete(ctx, top, platforms); err != nil {
		return fmt.Errorf("registry: %s: not recorded, the pulled image is not complete in the store: %w", refName, err)
	}
	return r.remember(ctx, refName, top)
}

// remember records ref -> desc as a root, replacing an older record.
func (r *Resolver) remember(ctx context.Context, refName string, desc v1.Descriptor) error {
	desc.Annotations = map[string]string{
		cache.AnnotationRefName:    refName,
		cache.AnnotationResolvedAt: r.o.now().UTC().Format(time.RFC3339Nano),
	}
	if subject, ok := subjectOfTag(refName); ok { // a signature's tag: kept with its image (signatures.go)
		desc.Annotations[cache.AnnotationSubject] = subject.String()
	}
	desc.Platform = nil
	r.mu.Lock()
	delete(r.checked, refName)
	r.mu.Unlock()
	return rootindex.Record(ctx, r.index, desc) // one record, not a rewrite, where the index can
}
