// Package buildkit connects buildcache to BuildKit (pinned to v0.33.1): it
// hands a build its base images from a local store, pinned by digest, and
// runs multi-platform builds of a Dockerfile on a buildkitd.
//
//   - PinBaseImages needs no daemon: it resolves the Dockerfile's base
//     images through our resolver and computes what goes into a
//     client.SolveOpt (named contexts and an OCI store, or a rewritten
//     Dockerfile).
//   - Build needs a running buildkitd (a *client.Client connected to it):
//     it runs the dockerfile frontend with the pinned images, cache
//     imports and exports, and outputs, and reports every step.
//
// Both take the same Options, so one list (WithPlatforms, WithBuildArgs,
// WithTarget, WithDockerfile) describes the build for both calls; each
// option's doc says which call reads it.
//
// Package buildkit/cacheentry makes the cache entries that point
// BuildKit's --cache-from/--cache-to at the same local directory, registry
// repository or S3 bucket that Go code uses, so the two share one cache
// without copying; Build takes them with WithCache. Importing this package
// links neither the AWS SDK nor our s3 package.
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
// A resolver with a trust policy (registry.WithVerifier, package trust)
// refuses an image no trusted signature covers: PinBaseImages then fails
// with its *registry.UntrustedError in the chain (errors.Is
// cache.ErrUntrusted), and nothing is pinned.
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
// PinBaseImages reads blobs through a LayoutStore (Get, Stat and Dir, as a
// *localfs.Store has) and the Dockerfile with buildkit/internal/dockerfile.
//
// # Builds
//
// Build runs one solve for every target platform on the daemon a
// *client.Client is connected to: the context directory and the
// Dockerfile go through the session, the pinned images' OCI store is
// served read-only, and the outputs (OCITarball, LocalDir, PushImage) are
// written when the solve succeeds (a tarball is renamed into place, never
// left half written). The Result lists every step the daemon reported and
// which came from a cache, and the image's per-platform manifests.
// WithProgress shows BuildKit's own progress display.
//
// # Errors
//
// Errors about the Dockerfile are *LineError ("Dockerfile:3: ...") and
// wrap ErrInvalidDockerfile, ErrUndefinedArg, ErrPlatformNotFound or
// ErrContextConflict; a resolver's error stays in the chain, so
// errors.Is(err, cache.ErrOffline) works. A build the daemon fails on one
// step is a *StepError naming the step, its Dockerfile line and its exit
// code, with the daemon's error in the chain.
package buildkit
