package cache

import "errors"

// The errors every backend returns, wrapped with the digest, key or path
// they concern. Test them with errors.Is.
var (
	// ErrNotFound: no such blob, image or object in the cache.
	ErrNotFound = errors.New("not found in cache")

	// ErrCorrupt: stored bytes do not match their digest or size. The
	// backend has removed the bad entry by the time a caller sees this.
	ErrCorrupt = errors.New("cached content is corrupt")

	// ErrDigestMismatch: Put was given bytes that do not hash to the digest
	// (or do not have the size) it was given. Nothing was stored.
	ErrDigestMismatch = errors.New("content does not match digest")

	// ErrNoSpace: not enough free space (disk, quota or byte budget), even
	// after eviction. Nothing was written and existing entries stay readable.
	ErrNoSpace = errors.New("not enough space in cache")

	// ErrOffline: the policy forbids the network (PullNever) or the remote is
	// unreachable, and nothing usable is cached.
	ErrOffline = errors.New("offline and not cached")

	// ErrInvalidDigest: a digest that is not "sha256:" followed by 64
	// lower-case hex digits (or, where content is named in a registry's
	// API, "sha512:" and 128: ParseContentDigest). It never reaches a path
	// or a key.
	ErrInvalidDigest = errors.New("invalid digest")

	// ErrUntrusted: a trust policy refused the image: it is unsigned, or
	// no signature on it verifies as the policy requires. Nothing of it
	// was recorded or served for its tag. The error names the reference,
	// the digest and the reason (registry.UntrustedError).
	ErrUntrusted = errors.New("refused by the trust policy")
)
