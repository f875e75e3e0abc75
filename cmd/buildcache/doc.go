// Command buildcache warms, inspects and cleans a buildcache directory: the
// local store (an OCI image layout) in which base images are kept, resolved
// to digests per platform and revalidated against their registry with one
// HEAD request. It works on any other cache buildcache.Open opens, too.
//
// # Usage
//
//	buildcache [--cache DIR|URL] [--json] [--insecure-registry HOST:PORT]... [--timeout D] COMMAND
//
//	warm IMAGE... [--platform P,P] [--policy always|if-not-present|never] [--stale-budget D]
//	     [--trust-policy FILE] [--with-signatures]
//	    Make sure each image's requested platforms are stored, pulling what
//	    is missing, with progress bars on a terminal and log lines otherwise.
//	    Prints per image its digest, where it came from (hit, revalidated,
//	    pulled, stale), the blobs and bytes stored and those downloaded.
//	resolve IMAGE... [--platform P,P] [--policy ...] [--trust-policy FILE]
//	    The same resolution, printing the digest each tag points to and the
//	    manifest digest of each platform:
//	        IMAGE DIGEST SOURCE
//	          PLATFORM MANIFEST-DIGEST
//	ls
//	    The recorded images: reference, digest, when last resolved,
//	    platforms stored, blob count and bytes.
//	verify [--remove]
//	    Hash every blob; report (or remove) the bad ones and list the blobs
//	    recorded images need that are missing.
//	gc [--prune-older-than D] [--ttl D] [--max-bytes N] [--dry-run] [--far] [--min-age D]
//	    Drop the records of images not resolved for D, then remove blobs no
//	    recorded image reaches: unused for longer than --ttl, or least
//	    recently used beyond --max-bytes (0 for either: all of them). On a
//	    bucket (s3://, or --far for a tier's far tier) it keeps what every
//	    process's records, BuildKit's cache manifests and live leases
//	    reach, and what is younger than --min-age (1h).
//	serve --upstream NS=URL... [--listen 127.0.0.1:5000] [--default-upstream NS]
//	      [--max-age D] [--tls-cert F --tls-key F] [--htpasswd F] [--token-file F]
//	      [--log-format text|json] [--metrics-listen ADDR] [--shutdown-timeout D]
//	      [--shutdown-delay D] [--stale-budget D] [--not-found-ttl D]
//	      [--trust-policy FILE]
//	    Serve the cache as a pull-through registry mirror for Docker,
//	    containerd, the kubelet and buildkitd, until SIGTERM or SIGINT;
//	    loopback only unless --allow-remote; /healthz and /readyz for probes.
//	    `buildcache serve --help` says more.
//	node-config --registry NS=URL... [--mirror URL] [--hosts-dir DIR] [--wait D]
//	      [--remove | --until-signal]
//	    Once the node's mirror answers /readyz, write containerd's hosts.toml
//	    for each registry: the mirror first, the registry's server as the
//	    fallback; --remove restores what they replaced. `buildcache
//	    node-config --help` says which containerd settings it needs.
//	stats
//	    Blob count, bytes, recorded images and the store's lifetime
//	    counters: hits, misses, bytes in and out, evictions, corruptions,
//	    errors, and the resolvers' resolves, hits, revalidations, pulls,
//	    stale and reserved answers, blobs and bytes fetched.
//
// --cache defaults to $XDG_CACHE_HOME/buildcache, or ~/.cache/buildcache.
//
// # Caches
//
// --cache is a directory (a local store, created if missing or empty) or
// any URL buildcache.Open takes: file:///dir, s3://bucket/prefix?...,
// oci://host/repo, tier://?near=URL&far=URL, mem://. Credentials never come
// from the URL, and URLs are printed without userinfo or query string. A
// command uses what the cache offers, looking through a tier to its near
// tier (and saying so on stderr):
//
//	warm, resolve  any cache; the resolver's records persist where the cache
//	               keeps roots (a local store, or a tier whose near tier is one)
//	ls             a cache whose roots outlive the process (a local store,
//	               a tier whose near tier is one, a bucket's records)
//	gc             a local store (a tier's near one), or a bucket: s3://,
//	               or with --far the far tier of a tier://
//	verify         a local store's blob check
//	stats          any cache; lifetime counters from a local store, else
//	               this process's counters
//
// A command the cache cannot serve exits 2, naming the scheme and what it
// lacks ("verify needs a local store's blob check (localfs Verify); the
// cache s3://bucket/prefix (scheme s3) has none"); so does a URL that
// cannot be opened.
//
// # Lifetime counters
//
// A local store keeps its counters in .buildcache/counters, for every
// process that used it: each adds what it counted every few seconds and
// when it ends, under a lock, replacing the file by a rename, so processes
// never lose each other's additions and a reader never sees half a file.
// A process killed loses at most its last few seconds. A file found
// damaged (it carries a checksum) counts as empty, with a warning, and is
// rewritten. A resolver adds its own counters there after every resolve
// (registry.ResolverStatsFromCounters reads them back).
// --json makes every command print one JSON document on stdout, also when
// it fails ({"error": "...", "exit_code": N}); messages and progress go to
// stderr. --insecure-registry talks plain HTTP to a registry (only loopback
// registries, localhost, 127.0.0.0/8 and ::1, use it otherwise; private
// addresses get HTTPS). --timeout D bounds each wait for a registry: to
// connect, for the TLS handshake, for an answer's headers and for the next
// bytes of a body (default: 30s, the handshake 10s); each try waits anew,
// and a registry silent for longer counts as unreachable. It is not a
// deadline for the whole command (a download that keeps moving may take
// longer; use timeout(1) for that). A cached image waits for a failing
// registry (silent, refusing, 5xx, 429, a longer Retry-After) at most
// --stale-budget D (warm, resolve, serve; default 5s), and is then served
// stale; serve's --not-found-ttl D (default 30s) answers a tag the
// upstream answered 404 for with that 404 for D, without asking again. --policy always revalidates a cached
// image with one HEAD and pulls only when the tag moved; if-not-present
// makes no request for a cached image; never makes none at all. Sizes take
// units (500MB = 500*10^6 bytes, 10GiB = 10*2^30); durations take Go's
// syntax plus d for days (90m, 36h, 7d, 1.5d).
//
// # Exit codes
//
// Scripts can rely on them:
//
//	0  ok; a stale answer (the registry failed and the cached copy was
//	   served) is ok too, with a warning on stderr naming the registry's error
//	1  any other failure
//	2  usage error: bad flag, size, duration, platform or image reference
//	3  offline and not cached: cache.ErrOffline or cache.ErrNotFound, e.g.
//	   --policy never for an image that is not (completely) stored, or a
//	   registry that does not answer at all (connection refused, timeout)
//	4  corrupt: verify found bad blobs (without --remove), or a download
//	   did not match its digest (cache.ErrCorrupt, cache.ErrDigestMismatch)
//	5  not enough space in the cache (cache.ErrNoSpace)
//	6  refused by the trust policy (--trust-policy; cache.ErrUntrusted)
//
// warm and resolve go on after an image fails; the exit code is then that
// of the first failure.
package main
