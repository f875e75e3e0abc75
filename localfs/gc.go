package localfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildcache/buildcache/cache"
)

// reach says how a blob is reachable from index.json.
type reach struct {
	required bool // it must be present: a root, or what a manifest references
	named    bool // a root with a reference name (a recorded image) reaches it
}

// reachable returns the blobs that index.json's roots reach: the roots and,
// recursively, the manifests, configs and layers that index and manifest
// blobs reference. Missing or unreadable manifests end their branch; they
// are returned as the frontier, since their arrival would extend what is
// reachable. Roots and what a manifest references are required, while an
// index's children may be absent (a resolver fetches only the platforms
// it was asked for). Named roots are walked first, so that a blob first
// met from them is all that is named.
func (s *Store) reachable(ctx context.Context) (map[digestKey]reach, map[digestKey]bool, error) {
	im, err := s.Index(ctx)
	if err != nil {
		return nil, nil, err
	}
	seen := map[digestKey]reach{}
	frontier := map[digestKey]bool{}
	named := false // the root being walked has a reference name
	var visit func(desc v1.Descriptor, required bool) error
	visit = func(desc v1.Descriptor, required bool) error {
		k, ok := validKey(desc.Digest)
		if !ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if r, ok := seen[k]; ok {
			r.required = r.required || required
			seen[k] = r
			return nil
		}
		seen[k] = reach{required: required, named: named}
		if !isManifest(desc.MediaType) {
			return nil
		}
		m, absent := s.readManifestRefs(desc.Digest)
		if absent {
			frontier[k] = true
			return nil
		}
		for _, c := range m.Manifests {
			if err := visit(c, false); err != nil {
				return err
			}
		}
		mustHave := append(append([]v1.Descriptor{}, m.Layers...), m.Blobs...)
		if m.Config != nil {
			mustHave = append(mustHave, *m.Config)
		}
		for _, c := range mustHave {
			if err := visit(c, true); err != nil {
				return err
			}
		}
		if m.Subject != nil { // the image an artifact describes may live elsewhere
			if err := visit(*m.Subject, false); err != nil {
				return err
			}
		}
		return nil
	}
	var described []v1.Descriptor // roots kept with their subject
	for _, pass := range []bool{true, false} {
		named = pass
		for _, desc := range im.Manifests {
			if (desc.Annotations[ociRefName] != "") != pass {
				continue
			}
			if _, ok := desc.Annotations[cache.AnnotationSubject]; ok {
				described = append(described, desc)
				continue
			}
			if err := visit(desc, true); err != nil {
				return nil, nil, err
			}
		}
	}
	named = true
	if err := visitDescribed(described, seen, visit); err != nil {
		return nil, nil, err
	}
	return seen, frontier, nil
}

// visitDescribed visits the roots that describe another image
// (cache.AnnotationSubject: its signatures, attestations, referrers)
// whose subject is reached, until none is left whose subject is: they
// are kept while their subject is, and one may describe another.
func visitDescribed(described []v1.Descriptor, seen map[digestKey]reach, visit func(v1.Descriptor, bool) error) error {
	for progress := true; progress; {
		progress = false
		rest := described[:0]
		for _, desc := range described {
			subject, err := v1.NewHash(desc.Annotations[cache.AnnotationSubject])
			k, ok := validKey(subject)
			if _, reached := seen[k]; err != nil || !ok || !reached {
				rest = append(rest, desc)
				continue
			}
			if err := visit(desc, true); err != nil {
				return err
			}
			progress = true
		}
		described = rest
	}
	return nil
}

// ociRefName is the OCI annotation that names a root; a resolver records
// the images it pulled under it (cache.AnnotationRefName).
const ociRefName = cache.AnnotationRefName

func isManifest(mt types.MediaType) bool {
	switch mt {
	case types.OCIImageIndex, types.OCIManifestSchema1, types.DockerManifestList, types.DockerManifestSchema2,
		"application/vnd.oci.artifact.manifest.v1+json":
		return true
	}
	return false
}

// lowWaterBytes is what an eviction brings the budget's usage down to.
func (s *Store) lowWaterBytes() int64 {
	return int64(float64(s.opts.maxBytes) * s.opts.lowWater)
}

// byLastUse orders blobs least recently used first.
func byLastUse(a, b blobRec) int {
	switch {
	case a.lastUse < b.lastUse:
		return -1
	case a.lastUse > b.lastUse:
		return 1
	}
	return 0
}

// evict makes room for need more bytes within the byte budget and frees at
// least freeAtLeast bytes of disk, removing the least recently used blobs
// that no root reaches. When the budget demands it, it evicts down to the
// low-water mark (WithLowWater) rather than to the budget, so that the
// next Puts fit without another eviction: the scan of blobs/ it costs is
// paid once per (budget - low water) bytes written. It holds the
// exclusive GC lock, so no other process commits or collects meanwhile,
// and it recounts the usage record. It returns the bytes freed.
func (s *Store) evict(ctx context.Context, need, freeAtLeast int64) (int64, error) {
	l, err := s.lockGCExclusive(ctx)
	if err != nil {
		return 0, err
	}
	defer l.Unlock()
	blobs, used, err := s.scan(ctx)
	if err != nil {
		return 0, err
	}
	reserved, err := s.recount(ctx, used)
	if err != nil {
		return 0, err
	}
	budget := s.opts.maxBytes
	within := func(limit, freed int64) bool { return budget == 0 || used-freed+reserved+need <= limit }
	enough := func(freed int64) bool { return within(budget, freed) && freed >= freeAtLeast }
	if enough(0) {
		return 0, nil // the recount found room: someone else evicted, or the record overcounted
	}
	goal := func(freed int64) bool { return within(s.lowWaterBytes(), freed) && freed >= freeAtLeast }
	keep, err := s.reachableIn(ctx, blobs)
	if err != nil {
		return 0, err
	}
	leased := s.leasedKeys()
	evictable := func(b blobRec) bool {
		_, reached := keep[b.key]
		return !reached && !leased[b.key]
	}
	var room int64
	for _, b := range blobs {
		if evictable(b) {
			room += b.size
		}
	}
	if !enough(room) {
		// Evicting cannot make room: keep every entry and refuse the write.
		limit := "no byte budget"
		if budget > 0 {
			limit = fmt.Sprintf("budget %d bytes", budget)
		}
		return 0, fmt.Errorf("%d bytes needed (%s, %d to free on disk); blobs use %d bytes and writers in progress reserved %d, of which only %d may be evicted (the rest is reachable from index.json or leased by pulls in progress): %w",
			need, limit, freeAtLeast, used, reserved, room, cache.ErrNoSpace)
	}
	slices.SortFunc(blobs, byLastUse)
	var freed int64
	for _, b := range blobs {
		if goal(freed) {
			break
		}
		if !evictable(b) {
			continue
		}
		if err := os.Remove(filepath.Join(s.blobDir, hexOf(b.key))); err != nil {
			continue
		}
		freed += b.size
		s.stats.Evictions.Add(1)
	}
	s.usage.add(ctx, -freed)
	if !enough(freed) {
		return freed, fmt.Errorf("%d bytes needed, budget %d, %d in use: blobs could not be removed: %w",
			need, budget, used-freed, cache.ErrNoSpace)
	}
	return freed, nil
}

// hexOf is the file name of the blob k.
func hexOf(k digestKey) string { return k.hash().Hex }

// GCOption configures one GC run. An option given a value it cannot
// take makes GC fail before it changes anything.
type GCOption func(*gcOptions) error

type gcOptions struct {
	maxBytes   int64
	ttl        time.Duration
	dryRun     bool
	progress   func(done, total int)
	candidates func(GCCandidate)
}

// GCMaxBytes collects until the blobs fit in n bytes; 0 means no budget
// for this run. Default: the store's WithMaxBytes. A negative n is an
// error.
func GCMaxBytes(n int64) GCOption {
	return func(o *gcOptions) error {
		if err := nonNegative("GCMaxBytes", n); err != nil {
			return err
		}
		o.maxBytes = n
		return nil
	}
}

// GCTTL collects blobs unused for longer than d; 0 means no expiry for
// this run. Default: the store's WithTTL. A negative d is an error.
func GCTTL(d time.Duration) GCOption {
	return func(o *gcOptions) error {
		if err := nonNegative("GCTTL", d); err != nil {
			return err
		}
		o.ttl = d
		return nil
	}
}

// GCDryRun makes GC remove nothing, temp files included: its report
// counts what it would remove, and GCCandidates lists it. Default: GC
// removes what it reports.
func GCDryRun() GCOption {
	return func(o *gcOptions) error {
		o.dryRun = true
		return nil
	}
}

// GCCandidates has GC call fn for each blob it removes (with GCDryRun:
// would remove), least recently used first, with the reason, from the
// goroutine that called GC and while it holds the GC lock: fn should be
// quick. Default: no calls. A nil fn is an error.
func GCCandidates(fn func(GCCandidate)) GCOption {
	return func(o *gcOptions) error {
		if fn == nil {
			return errors.New("localfs: GCCandidates(nil)")
		}
		o.candidates = fn
		return nil
	}
}

// GCProgress has GC call fn with the blobs it has decided on so far and
// the blobs it found, every few thousand blobs and once at the end, from
// the goroutine that called GC. Default: no calls. A nil fn is an error.
func GCProgress(fn func(done, total int)) GCOption {
	return func(o *gcOptions) error {
		if fn == nil {
			return errors.New("localfs: GCProgress(nil)")
		}
		o.progress = fn
		return nil
	}
}

// progressEvery is how many blobs GC decides on between progress calls.
const progressEvery = 1024

// GCReason says why GC removes a blob.
type GCReason string

const (
	// GCExpired: no root reaches it and it was unused for longer than the TTL.
	GCExpired GCReason = "expired"
	// GCOverBudget: no root reaches it, and it is among the least recently
	// used blobs that must go for the rest to fit the byte budget.
	GCOverBudget GCReason = "over-budget"
)

// GCCandidate is a blob that GC removes, or with GCDryRun would remove.
type GCCandidate struct {
	Digest  v1.Hash
	Size    int64
	LastUse time.Time // its mtime, the LRU clock
	Reason  GCReason
}

// GCReport says what a GC run did.
type GCReport struct {
	Removed      int   // blobs removed (with GCDryRun: that would be)
	FreedBytes   int64 // their bytes
	Kept         int   // blobs kept
	KeptBytes    int64
	Roots        int  // blobs reachable from index.json, never collected
	Named        int  // of Roots, those reachable from a root with a reference name (a recorded image)
	Leased       int  // blobs kept because a pull in progress holds a lease on them (cache.Leaser)
	TempsRemoved int  // abandoned temp files swept
	DryRun       bool // GCDryRun: nothing was removed
}

// GC removes abandoned temp files, blobs that no root reaches and that
// were unused for longer than the TTL, and then the least recently used
// unreachable blobs until the rest fit the byte budget. Blobs reachable
// from index.json are kept, and so are blobs named by a live lease. It
// holds the exclusive GC lock: writers in other processes wait to commit,
// readers are not disturbed (an open blob stays readable after it is
// removed). It holds 48 bytes per blob found, and per reachable blob what
// reachability needs.
func (s *Store) GC(ctx context.Context, opts ...GCOption) (GCReport, error) {
	o := gcOptions{maxBytes: s.opts.maxBytes, ttl: s.opts.ttl}
	rep := GCReport{}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return rep, err
		}
	}
	rep.DryRun = o.dryRun
	if !o.dryRun {
		rep.TempsRemoved = s.sweepTemps()
	}
	l, err := s.lockGCExclusive(ctx)
	if err != nil {
		return rep, err
	}
	defer l.Unlock()
	blobs, used, err := s.scan(ctx)
	if err != nil {
		return rep, err
	}
	keep, err := s.reachableIn(ctx, blobs)
	if err != nil {
		return rep, err
	}
	leased := s.leasedKeys()
	slices.SortFunc(blobs, byLastUse)
	cutoff := s.opts.now().Add(-o.ttl).UnixNano()
	progress := func(done int) {
		if o.progress != nil && (done%progressEvery == 0 || done == len(blobs)) {
			o.progress(done, len(blobs))
		}
	}
	for i, b := range blobs {
		progress(i)
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if r, reached := keep[b.key]; reached {
			rep.Roots++
			if r.named {
				rep.Named++
			}
			rep.Kept++
			rep.KeptBytes += b.size
			continue
		}
		if leased[b.key] {
			rep.Leased++
			rep.Kept++
			rep.KeptBytes += b.size
			continue
		}
		var reason GCReason
		switch {
		case o.ttl > 0 && b.lastUse < cutoff:
			reason = GCExpired
		case o.maxBytes > 0 && used > o.maxBytes:
			reason = GCOverBudget
		}
		if reason != "" {
			removed := o.dryRun
			if !o.dryRun {
				err := os.Remove(filepath.Join(s.blobDir, hexOf(b.key)))
				removed = err == nil || errors.Is(err, fs.ErrNotExist)
			}
			if removed {
				used -= b.size
				rep.Removed++
				rep.FreedBytes += b.size
				if !o.dryRun {
					s.stats.Evictions.Add(1)
				}
				if o.candidates != nil {
					o.candidates(GCCandidate{Digest: b.key.hash(), Size: b.size, LastUse: time.Unix(0, b.lastUse), Reason: reason})
				}
				continue
			}
		}
		rep.Kept++
		rep.KeptBytes += b.size
	}
	progress(len(blobs))
	if !o.dryRun {
		if _, err := s.recount(ctx, used); err != nil {
			return rep, err
		}
	}
	return rep, nil
}
