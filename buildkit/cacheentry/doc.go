// Package cacheentry points BuildKit's own cache (--cache-from and
// --cache-to; client.SolveOpt's CacheImports and CacheExports) at the
// storage our caches use, so that BuildKit and Go code share one cache
// and nothing is copied. It needs no daemon: it computes the entries.
//
//	entries, err := cacheentry.For(store, cacheentry.WithName("main"))
//	res, err := buildkit.Build(ctx, c, dir, buildkit.WithCache(entries.Imports, entries.Exports))
//
// For maps a cache to BuildKit cache entries by what it can tell, found
// with cache.As through wrappers, not by its type:
//
//   - a tier (cache.Tiered, as *tier.Cache): its near tier's entries
//     followed by its far tier's;
//   - an S3 location (S3Located, as *s3.Cache): type=s3 with the same
//     bucket and key layout (BuildKit's
//     <prefix><blobs_prefix>sha256:<hex> is the cache's blob key);
//   - a registry repository (RegistryRepository, as the repository-backed
//     LayerCache): type=registry on the repository, at a tag other than
//     the one the cache keeps its index at;
//   - an OCI layout directory (LayoutDir, as *localfs.Store): type=local
//     on the directory, which BuildKit's client writes blobs into with
//     containerd's content store and tags in index.json.
//
// Local, Registry and S3 build the entries from names instead. Every call
// takes the same Options (WithMode, WithName, WithImportOnly, ...).
//
// The package links neither the AWS SDK nor a registry client: the S3
// layout is s3loc.Location, plain data.
//
// # Sharing a directory with BuildKit
//
// localfs takes BuildKit's index.json.lock whenever it changes index.json,
// so neither drops the other's roots; its GC keeps every blob a BuildKit
// cache manifest tagged in index.json reaches; and Walk, Verify and GC
// ignore BuildKit's ingest/ directory. BuildKit's client does not wait for
// that lock: an export that finds it taken fails (localfs holds it for
// microseconds). Never set reset=true on a type=local export into a
// localfs store: BuildKit would delete every blob index.json does not
// reach. For refuses it.
//
// # Errors
//
// For returns ErrUnsupportedCache for a cache it cannot map; options and
// names BuildKit would reject are errors before any build starts.
package cacheentry
