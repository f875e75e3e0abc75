package cache

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// PullPolicy says when a resolver may use the network.
type PullPolicy int

const (
	// PullAlways revalidates a cached image with one HEAD request and pulls
	// only when the tag has moved. It is the default.
	PullAlways PullPolicy = iota
	// PullIfNotPresent uses a cached image without any request, and pulls
	// only what is not cached.
	PullIfNotPresent
	// PullNever never uses the network: a cached image or ErrOffline.
	PullNever
)

// String returns the policy as a command line spells it.
func (p PullPolicy) String() string {
	switch p {
	case PullAlways:
		return "always"
	case PullIfNotPresent:
		return "if-not-present"
	case PullNever:
		return "never"
	}
	return fmt.Sprintf("PullPolicy(%d)", int(p))
}

// ParsePullPolicy is the inverse of PullPolicy.String.
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch s {
	case "always", "Always":
		return PullAlways, nil
	case "if-not-present", "IfNotPresent":
		return PullIfNotPresent, nil
	case "never", "Never":
		return PullNever, nil
	}
	return 0, fmt.Errorf("unknown pull policy %q: want always, if-not-present or never", s)
}

// Source says where a resolved image came from.
type Source int

const (
	// Hit: served from the cache with no request (PullIfNotPresent,
	// PullNever, a digest reference, or a revalidation younger than MaxAge).
	Hit Source = iota
	// Revalidated: one HEAD showed the cached digest is still current.
	Revalidated
	// Pulled: the image (or the part of it not cached) was downloaded.
	Pulled
	// Stale: the remote failed and the cached copy was served anyway.
	Stale
	// Reserved: the cached copy was served without the pull that would
	// have brought it up to date, to keep the registry's rate-limit budget
	// (registry.WithRateLimitReserve): the budget was at or below the
	// reserve, or a 429's Retry-After had not passed. Why says which, and
	// whether the tag had moved.
	Reserved
)

// String returns the source in lower case, as reports print it.
func (s Source) String() string {
	switch s {
	case Hit:
		return "hit"
	case Revalidated:
		return "revalidated"
	case Pulled:
		return "pulled"
	case Stale:
		return "stale"
	case Reserved:
		return "reserved"
	}
	return fmt.Sprintf("Source(%d)", int(s))
}

// ResolvedImage is a base image reference resolved to digests.
type ResolvedImage struct {
	Ref       string             // the reference as asked
	Digest    v1.Hash            // what the tag points to (index or manifest)
	Manifests map[string]v1.Hash // "linux/amd64" -> platform manifest digest
	Source    Source
	// RemoteErr is the remote error that made Source Stale (or Reserved,
	// when the registry answered 429); nil otherwise.
	RemoteErr error
	// Why says how the resolver came to this answer.
	Why Explanation
}

// Explanation is why a resolve answered as it did: what the cache held,
// what the registry said, what was downloaded. A zero field played no part
// in the decision (nothing recorded, no request, nothing fetched).
type Explanation struct {
	// Policy, MaxAge and Bypass are the settings the resolve ran with.
	Policy PullPolicy
	MaxAge time.Duration
	Bypass bool
	// LastChecked is when the reference was last known to point to
	// StoredDigest, before this resolve (zero: never recorded).
	LastChecked time.Time
	// Age is how long before this resolve LastChecked was: under MaxAge, a
	// PullAlways resolve sends no request.
	Age time.Duration
	// StoredDigest is what the cache had recorded for the reference (zero:
	// nothing).
	StoredDigest v1.Hash
	// RemoteDigest is what the registry said the reference points to now
	// (zero: it was not asked, or did not answer).
	RemoteDigest v1.Hash
	// Missing lists the blobs (manifests, configs, layers) of the recorded
	// image that the store lacked: why a recorded image was pulled again.
	Missing []v1.Hash
	// Fetched and FetchedBytes count what this resolve downloaded,
	// manifests included. A download shared with a concurrent resolve
	// counts in the resolve that started it.
	Fetched      int
	FetchedBytes int64
	// UpstreamError is the registry failure behind a Stale or Reserved
	// answer ("" otherwise).
	UpstreamError string
	// Trust is what a trust policy's verification said of the image, when
	// one applies ("verified: cosign signature, key cosign.pub (rule
	// ghcr.io/acme/*)"; "" when none applies).
	Trust string
	// RetryAfter is when a 429 allows the registry to be asked again, when
	// that held a pull back (Reserved; zero otherwise).
	RetryAfter time.Time
	// Reason is one sentence a person can read, naming the decision.
	Reason string
}

// BaseImageResolver resolves base image references to per-platform digests,
// keeping what it fetched in a local store.
type BaseImageResolver interface {
	Resolve(ctx context.Context, ref string, opts ...ResolveOption) (*ResolvedImage, error)
}

// ResolveOptions are the per-call settings of Resolve, built from
// ResolveOptions by MakeResolveOptions.
type ResolveOptions struct {
	Platforms []string      // default: the resolver's (usually the host's)
	Policy    PullPolicy    // default: PullAlways
	MaxAge    time.Duration // default: 0, every PullAlways resolve revalidates
	Bypass    bool          // default: false; true ignores the cache entirely
}

// ResolveOption sets one of ResolveOptions.
type ResolveOption func(*ResolveOptions) error

// MakeResolveOptions applies opts over the defaults.
func MakeResolveOptions(opts ...ResolveOption) (ResolveOptions, error) {
	var o ResolveOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return ResolveOptions{}, err
		}
	}
	return o, nil
}

// WithPlatforms asks for these platforms ("linux/amd64", "linux/arm64/v8").
func WithPlatforms(platforms ...string) ResolveOption {
	return func(o *ResolveOptions) error {
		for _, p := range platforms {
			if _, err := v1.ParsePlatform(p); err != nil || p == "" {
				return fmt.Errorf("invalid platform %q: want os/arch[/variant]", p)
			}
		}
		o.Platforms = append(o.Platforms, platforms...)
		return nil
	}
}

// WithPolicy sets the pull policy (default PullAlways).
func WithPolicy(p PullPolicy) ResolveOption {
	return func(o *ResolveOptions) error {
		if p < PullAlways || p > PullNever {
			return fmt.Errorf("invalid pull policy %d", int(p))
		}
		o.Policy = p
		return nil
	}
}

// WithMaxAge makes a revalidation younger than d count as fresh: the image
// is served as a Hit with no request (default 0: always revalidate).
func WithMaxAge(d time.Duration) ResolveOption {
	return func(o *ResolveOptions) error {
		if d < 0 {
			return fmt.Errorf("invalid max age %v: must not be negative", d)
		}
		o.MaxAge = d
		return nil
	}
}

// WithBypass goes to the registry as if there were no cache (default false).
func WithBypass() ResolveOption {
	return func(o *ResolveOptions) error {
		o.Bypass = true
		return nil
	}
}
