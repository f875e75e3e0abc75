// Package localfs provides Store, a cache.LayerCache and cache.RootIndex
// kept in a directory on local disk, laid out as an OCI image layout, that
// many goroutines and many processes can share.
//
//	store, err := localfs.Open(dir, localfs.WithMaxBytes(20<<30))
//
// # Layout
//
// The directory is an OCI image layout, version 1.0.0:
//
//	oci-layout          {"imageLayoutVersion":"1.0.0"}
//	index.json          the roots: an OCI image index
//	blobs/sha256/<hex>  one file per blob, named by its digest
//	.buildcache/        ours alone; OCI tools ignore it
//	    tmp/            temp files of writes in progress
//	    gc.lock         taken by GC and eviction (exclusive), by commits (shared)
//	    gc.wait         held (shared) by writers waiting for gc.lock
//	    index.lock      serialises UpdateIndex and root records between processes
//	    roots.journal   roots recorded since index.json was last rewritten
//	    counters        lifetime counters of every process (Lifetime)
//	    counters.lock   serialises their flushes
//	    leases/         one locked file per lease of a pull in progress
//
// Open creates an empty layout in an empty or missing directory, and
// refuses (never overwrites) a directory that holds something else: an
// oci-layout of another version, an index.json that is not an index.
// Any number of processes may create the same store at once: each step
// is done only if it is not done yet, .buildcache is the first entry
// made and oci-layout the last, so a directory with an oci-layout is a
// complete layout and one with either entry is a store (IsStore), never
// a half-made one mistaken for someone else's directory.
// Files in blobs/sha256 whose names are not digests are not blobs: Walk,
// Verify and GC skip them, as they skip what other tools leave beside
// the layout (containerd's ingest/, BuildKit's index.json.lock).
//
// A Put streams into a temp file in .buildcache/tmp, hashing what was
// stored as it goes, syncs it, and renames it into blobs/sha256 only if
// digest and size match; the rename is synced too (PutDeferred leaves
// that to one SyncBlobs for a group of blobs). A crash, a full disk or a
// cancellation leaves the previous state and no partial blob. Index.json
// is replaced by a rename as well, so a reader sees the old or the new
// one.
//
// The temp file of a Put whose context is done goes at once, even while
// its source is stalled, and Close abandons the Puts in progress (they
// fail with ErrClosed, as later ones do) and removes their temp files
// before it returns: a process that closes its store and exits leaves
// none.
//
// A blob's modification time is its last use, the LRU clock that
// every process sees: Put stamps it, and Get and a Put of a blob already
// stored touch it (at most once a second per blob).
//
// # Verification
//
// What is hashed, and when:
//
//   - Put hashes the bytes as it writes them, and commits them only if
//     digest and size match (cache.ErrDigestMismatch otherwise).
//   - Get hashes every byte it returns; at the end a mismatch fails the
//     read with cache.ErrCorrupt and removes the entry. A Get read to its
//     verified end, the file unchanged meanwhile, is recorded (below).
//   - Verify hashes every blob.
//   - OpenFile (cache.FileOpener) sends a blob from its file: SendRange
//     writes all but the range's last byte from the file (with
//     sendfile(2) when the writer is a connection's ReadFrom, else
//     through a buffer), and the last byte only once the whole blob, not
//     only the range, is known to match and the file shows no change
//     since it was opened. It is known to match when the store's record says that this same
//     file was hashed and matched less than a minute ago
//     (WithVerifiedRecord) and the file has not changed since; otherwise
//     the whole file is hashed on another goroutine, through the page
//     cache, alongside the send (one hash for every send of the file in
//     progress), and recorded if it matched. A mismatch is
//     cache.ErrCorrupt and removes the entry, as Get's. So a tail range
//     (bytes=-1) of a blob verified moments ago reads one byte, and a
//     hundred clients pulling a blob within the minute cost one hash.
//
// The record is in memory, per process: at most 4096 blobs (the most
// recently verified) for at most a minute each, by default. It keys a
// blob by its file's identity: device, inode, size, mtime and ctime.
// Every change to a file (a write, a truncation, a change of its times)
// sets its ctime to the kernel's current time, so a file whose identity
// is unchanged has not been changed since, with the exceptions below.
// The store's own touches (mtime is the LRU clock) change the identity
// too: the store carries the record over its own touch (an fstat before
// and after it), and a send in progress goes on. Any other change of the
// identity — another process's touch or write, a truncation — voids the
// record and cuts the sends in progress short of their last byte (the
// clients retry; the entry stays, and the next send hashes the file).
//
// A tampering that keeps size, mtime and ctime goes unseen until the
// record's minute is over, when the blob is hashed again. It needs one
// of:
//
//   - a write to the file in place that lands within the same tick of
//     the file system's clock (1 to 10 ms) as the file's previous change,
//     and puts mtime back (which is itself a change, in the same tick);
//   - a write in the instant between the store's fstat of the file and
//     its own touch (microseconds, at most once a second per blob);
//   - setting the system clock back to forge ctime (CAP_SYS_TIME);
//   - writing under the file system: the block device, debugfs (root);
//   - damage the kernel does not see: the disk, its controller or memory
//     returning other bytes once the page cache has dropped the file's
//     pages.
//
// WithVerifiedRecord(0, 0) turns the record off: every send then hashes
// its blob, still alongside the send.
//
// # Concurrency
//
// A Store is safe for concurrent use, and so is the directory, by every
// process that opens it, under file locks (flock(2)). Each lock is taken
// on its own open file description, so it excludes other goroutines of
// the same process as it excludes other processes, and a killed process
// never leaves one behind. Waiting for a lock polls and ends when the
// context does.
//
//   - Writers of the same digest in one process wait for each other; in
//     different processes both may write, and the second rename replaces
//     identical bytes.
//   - A commit (the rename of a verified temp file into place) and the
//     touch of a blob already stored hold gc.lock shared; GC and eviction
//     hold it exclusively, so a collector never removes a blob between a
//     writer's decision to keep it and its arrival. Readers take no lock:
//     a blob that is open stays readable after it is removed.
//   - A writer waits a bounded time for gc.lock, however the collectors
//     of every process loop: at most for the collector run in progress
//     (one GC or one eviction, whose length grows with the blobs it
//     scans) and, if that run ended in the instant the writer first
//     asked, the one that began then — two runs — and one poll (50 ms)
//     after the last. A writer that finds the lock taken holds gc.wait
//     shared until it has gc.lock, and no collector begins a run while
//     gc.wait is held.
//   - UpdateIndex holds index.lock exclusively for the whole update, and
//     BuildKit's index.json.lock briefly at its end (see below).
//   - A writer locks its temp file while it writes it. Open and GC sweep
//     temp files that nobody holds and that are older than WithTempGrace:
//     the leftovers of a killed writer, never a live one's.
//
// A pull that writes blobs before it records its root takes a lease
// (Lease, cache.Leaser; registry.Resolver does): a file in
// .buildcache/leases that it keeps locked and in which it names every blob
// it Puts, Stats or Gets with the lease's context, under gc.lock shared.
// Eviction and GC, in any process, keep the blobs that live leases name.
// A lease file that a collector can lock has no live holder (released, or
// its process died) and is removed.
//
// What the store counts (Stats) is per process; Lifetime and
// LifetimeStats sum every process, from .buildcache/counters, to which
// each Store adds its counts every few seconds and on Close (a crash loses
// at most those few seconds; a damaged file restarts from zero, never an
// error). Its view of the bytes in use is shared (.buildcache/usage), and
// another process's writes are counted by the next eviction or GC, which
// scan the directory.
//
// # Links
//
// The store never reads, writes, touches or removes anything outside its
// directory through a symbolic link that a co-user of the directory put
// in place of one of its entries. Files are opened with O_NOFOLLOW and
// must be regular files; times are set through the descriptor. A blob
// entry that is a link (or a directory, a FIFO) is corrupt: Stat and Get
// fail with cache.ErrCorrupt and remove the link itself, Put replaces it,
// Verify reports it (and, with VerifyRemove, removes it). blobs/ and
// blobs/sha256 must be real directories (Open refuses links there); the
// private directories are replaced if they are not, and temp files are
// swept through a descriptor of the real temp directory.
//
// # Errors
//
// Errors wrap the sentinel errors of package cache, to be tested with
// errors.Is, and keep the cause in the chain:
//
//   - cache.ErrNotFound: no such blob (Stat, Get, Delete).
//   - cache.ErrInvalidDigest: a malformed digest, refused before any I/O.
//   - cache.ErrDigestMismatch: a Put whose bytes or size do not match;
//     nothing is stored.
//   - cache.ErrCorrupt: a stored blob whose bytes do not match its name,
//     found by Get (the read fails and the blob is removed) or by Verify.
//   - cache.ErrNoSpace: the byte budget (WithMaxBytes) or the free-space
//     floor (WithMinFreeBytes) cannot be kept even after eviction, or the
//     disk, a quota or the inodes ran out (the ENOSPC or EDQUOT stays in
//     the chain). A Put that can tell in advance fails before it reads
//     its input.
//
// An option given a value it cannot take (a negative size or duration)
// makes Open, GC or Verify fail with an error that names the option.
//
// # Garbage collection
//
// The roots are the descriptors in index.json. A blob is reachable if a
// root names it or a reachable manifest or index references it (its
// manifests, config, layers, blobs, subject); reachable blobs are never
// evicted or collected, nor are blobs named by a live lease. A resolver records the images it pulled as roots
// (cache.RootIndex), and BuildKit records its cache exports there too.
// A root annotated with cache.AnnotationSubject (an image's signatures,
// attestations and referrers list, which a resolver keeps with it) is
// kept only while the other roots reach its subject: it goes with the
// image it describes.
//
// Unreachable blobs go in two ways. A Put that would exceed the budget or
// the free-space floor first evicts the least recently used ones; if that
// cannot make room, it fails with ErrNoSpace and evicts nothing. GC
// removes abandoned temp files, unreachable blobs unused for longer than
// the TTL (WithTTL, or GCTTL for one run), and then the least recently
// used unreachable blobs until the rest fit the budget (WithMaxBytes, or
// GCMaxBytes for one run). Verify hashes every blob, reports the bad ones
// and, with VerifyRemove, removes them, and reports the required blobs
// that are missing (an index's children may be absent: a resolver fetches
// only the platforms it was asked for).
//
// # Sharing with BuildKit, skopeo, umoci
//
// Dir is a plain OCI image layout, so anything that reads one reads it:
// go-containerregistry's layout package and crane, skopeo and umoci as
// oci:DIR, BuildKit's type=local cache import and oci-layout:// named
// contexts.
//
// BuildKit's client also writes the directory when it exports a
// type=local cache: it adds blobs and rewrites index.json in place under
// its own lock, index.json.lock beside it (client/ociindex, gofrs/flock),
// which it does not wait for and removes after each use. UpdateIndex
// follows that protocol: it prepares the new index outside the lock,
// takes the lock only to check that index.json is still what it read and
// to rename the new one into place, checks that the lock file it holds is
// still the one at the path (ociindex may have removed it), and starts
// over if BuildKit changed the index meanwhile. It leaves the lock file in
// place. A read of index.json that does not parse (caught halfway through
// one of BuildKit's in-place writes) is retried under the lock. A lock
// file that another user made unreadable is skipped, as ociindex skips it
// for reading.
//
// Other writers of OCI layouts (skopeo copy to oci:DIR, umoci) take
// neither lock: run them when no buildcache process is updating the same
// index.json, or an update may be lost.
//
// # Roots at scale
//
// The roots are kept parsed in memory and checked with one lstat of
// index.json and one of the journal per call, so Index, Root and a warm
// resolve parse nothing unless a process changed them. RecordRoot (what
// a registry.Resolver records) appends to .buildcache/roots.journal and
// fsyncs it, one write for many concurrent calls, instead of rewriting
// index.json: Index, Root and GC see journalled roots at once, tools
// that read only index.json see them once it is compacted, after 512
// records, on the first call 5 seconds after the oldest, at Open, at
// every UpdateIndex, or at CompactRoots. A crash loses no root: the
// journal is applied at the next Open.
package localfs
