package s3

import (
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// GCOption configures a GC.
type GCOption func(*gcOptions)

type gcOptions struct {
	maxBytes   int64 // < 0: no budget
	ttl        time.Duration
	minAge     time.Duration
	window     time.Duration
	pruneOlder time.Duration // < 0: records are not pruned
	dryRun     bool
	candidates func(GCCandidate)
	maxHeld    int
}

func defaultGCOptions() gcOptions {
	return gcOptions{maxBytes: -1, minAge: DefaultGCMinAge, window: DefaultGCWindow, pruneOlder: -1, maxHeld: defaultMaxHeld}
}

// DefaultGCMinAge is how young a blob must be for GC to keep it whatever
// reaches it: GCMinAge's default.
const DefaultGCMinAge = time.Hour

// defaultMaxHeld bounds the candidates GC holds in memory at once: with
// more in the bucket it lists the blobs again after removing those.
const defaultMaxHeld = 100000

// GCMaxBytes removes the least recently used blobs that nothing keeps
// until the blobs in the bucket fit in n bytes (0: every such blob). A
// blob's last use is its LastModified, which Get and Put refresh when
// the Cache has WithTouchRefresh (as BuildKit's touch_refresh does).
// Default: no budget.
func GCMaxBytes(n int64) GCOption {
	return func(o *gcOptions) { o.maxBytes = max(n, 0) }
}

// GCTTL removes the blobs that nothing keeps and that were last used
// more than d ago. Default: none expire.
func GCTTL(d time.Duration) GCOption {
	return func(o *gcOptions) { o.ttl = max(d, time.Nanosecond) }
}

// GCMinAge keeps every blob last modified less than d ago, reachable or
// not: BuildKit uploads a cache's blobs before the cache manifest that
// lists them, and holds no lease. Default DefaultGCMinAge (1 hour).
func GCMinAge(d time.Duration) GCOption {
	return func(o *gcOptions) { o.minAge = max(d, 0) }
}

// GCWindow bounds how long the collection deletes after it read the
// leases, and so how long a pull that meets it may wait (package doc,
// # Fleet); what is left is removed by the next run. Default
// DefaultGCWindow (1 minute).
func GCWindow(d time.Duration) GCOption {
	return func(o *gcOptions) {
		if d > 0 {
			o.window = d
		}
	}
}

// GCPruneRecords deletes, before collecting, the records of references
// not checked against their registry for longer than d (0: all), so that
// what only they reached can go.
func GCPruneRecords(d time.Duration) GCOption {
	return func(o *gcOptions) { o.pruneOlder = max(d, 0) }
}

// GCDryRun removes nothing (no blob, record, lease or upload) and
// writes nothing: the report says what a collection would remove.
func GCDryRun() GCOption { return func(o *gcOptions) { o.dryRun = true } }

// GCCandidates calls fn for each blob the collection removes (or would,
// with GCDryRun): the expired ones as they are listed, then those over
// the budget, least recently used first.
func GCCandidates(fn func(GCCandidate)) GCOption { return func(o *gcOptions) { o.candidates = fn } }

// GCCandidate is a blob a collection removes.
type GCCandidate struct {
	Digest  v1.Hash
	Size    int64
	LastUse time.Time
	Reason  GCReason
}

// GCReason says why a blob is removed.
type GCReason string

const (
	ReasonExpired    GCReason = "expired"     // last used more than GCTTL ago
	ReasonOverBudget GCReason = "over-budget" // among the least recently used beyond GCMaxBytes
)

// GCReport is what a collection of the bucket did.
type GCReport struct {
	Blobs      int   // blobs listed
	Removed    int   // blobs removed (would be, with GCDryRun)
	FreedBytes int64 // their bytes
	Kept       int   // blobs left
	KeptBytes  int64

	Reachable         int      // kept: a record or a BuildKit cache manifest reaches them
	Leased            int      // kept: a live lease names them (a pull in progress)
	Young             int      // kept: modified less than GCMinAge ago
	Records           int      // records read (the fleet's roots)
	BuildKitManifests int      // BuildKit cache manifests read
	RecordsPruned     []string // references whose records GCPruneRecords deleted
	ManifestsDropped  []string // BuildKit manifests written during the run that listed a blob it removed, deleted
	Leases            int      // live leases
	LeasesExpired     int      // leases of holders gone, deleted
	UploadsAborted    int      // multipart uploads older than GCMinAge, aborted
	Deferred          int      // blobs that would have gone, left because the window ran out
	Passes            int      // listings of the blobs
	MaxHeld           int      // most candidates held in memory at once
	DryRun            bool
	Skipped           bool // another collector was running: nothing was done
}
