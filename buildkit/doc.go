// Package buildkit connects buildcache to BuildKit (pinned to v0.33.1): it
// hands a build its base images from a local store, pinned by digest, and
// points BuildKit's --cache-from/--cache-to at the same local directory,
// registry repository or S3 bucket that Go code uses, so the two share one
// cache without copying. Nothing here needs a running daemon: it computes
// what goes into a client.SolveOpt.
//
// # Base images
//
// PinBaseImages reads a Dockerfile with BuildKit's own parser and works out,
// as the dockerfile frontend does, which external images the build needs
// and for which platforms: ARGs before the first FROM, the automatic
// $BUILDPLATFORM and $TARGETPLATFORM, FROM --platform, stage names that
// shadow image names, COPY --from and RUN --mount from=<image>, scratch,
// and only the stages the target needs. It resolves each image once
// through a cache.BaseImageResolver, for all its platforms, and reports
// what it pinned and where it came from (hit, revalidated, pulled, stale).
//
// In NamedContexts mode (the default) the result is frontend attributes,
// one per image and platform,
//
//	context:<name>::<os>/<arch>[/<variant>] = oci-layout://buildcache@sha256:<platform manifest>
//
// and an OCI store (SolveOpt.OCIStores) over the localfs store's
// directory. <name> is the image as the frontend looks it up: the familiar
// reference without ":latest" ("alpine", "golang:1.22",
// "ghcr.io/acme/base", "alpine@sha256:..."). The frontend tries the key
// with the platform first, so each target platform gets its own manifest
// and BuildKit asks no registry for these images. In RewriteFrom mode the
// result is the Dockerfile with "@sha256:<digest>" added after each image
// reference and every other byte unchanged; BuildKit then fetches exactly
// those images from their registries.
//
// # Cache
//
// CacheFor maps a cache backend to BuildKit cache imports and exports over
// the same storage: a *localfs.Store to type=local on its directory (an
// OCI image layout, which BuildKit's client writes blobs into with
// containerd's content store and tags in index.json), a *s3.Cache to
// type=s3 with the same bucket and key layout (BuildKit's
// <prefix><blobs_prefix>sha256:<hex> is the Cache's BlobKey), a
// *ocirepo.Cache to type=registry on its repository, and a
// *tier.Cache to its near tier's entries followed by its far tier's. It
// asks each cache what it can tell (Dir, Location, Repository, Near and
// Far), not what type it is, so a wrapper that forwards those methods
// maps too. LocalCache, RegistryCache and S3Cache build the entries from
// names instead.
//
// PinBaseImages reads blobs through a LayoutStore (Get, Stat and Dir, as a
// *localfs.Store has) and the Dockerfile with buildkit/internal/dockerfile.
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
// reach. CacheFor refuses it.
//
// # Errors
//
// Errors about the Dockerfile are *LineError ("Dockerfile:3: ...") and
// wrap ErrInvalidDockerfile, ErrUndefinedArg, ErrPlatformNotFound or
// ErrContextConflict; a resolver's error stays in the chain, so
// errors.Is(err, cache.ErrOffline) works. CacheFor returns
// ErrUnsupportedCache for a cache it cannot map.
package buildkit
