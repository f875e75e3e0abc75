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
// The cache entries that point BuildKit's --cache-from/--cache-to at our
// caches are made by package buildkit/cacheentry (cacheentry.For); Build
// takes them with WithCache.
//
// PinBaseImages reads blobs through a LayoutStore (Get, Stat and Dir, as a
// *localfs.Store has) and the Dockerfile with buildkit/internal/dockerfile.
//
// # Errors
//
// Errors about the Dockerfile are *LineError ("Dockerfile:3: ...") and
// wrap ErrInvalidDockerfile, ErrUndefinedArg, ErrPlatformNotFound or
// ErrContextConflict; a resolver's error stays in the chain, so
// errors.Is(err, cache.ErrOffline) works.
package buildkit
