package cache

import (
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// hexLen is the number of hex digits of a digest of each algorithm the
// OCI image spec registers.
var hexLen = map[string]int{"sha256": 64, "sha512": 128}

// ParseDigest parses s as "sha256:<64 lower-case hex digits>". Anything
// else, including upper-case hex, other algorithms, and strings that could
// escape a directory ("sha256:../../etc/passwd"), is an error wrapping
// ErrInvalidDigest.
func ParseDigest(s string) (v1.Hash, error) {
	return parse(s, ValidateDigest, "sha256:<64 hex digits>")
}

// ParseContentDigest parses s as a digest of any algorithm the OCI image
// spec registers: "sha256:" and 64, or "sha512:" and 128, lower-case hex
// digits. It is for digests that name content in a registry's API; a
// store keeps sha256 blobs only (ParseDigest), so that each blob has one
// name. Anything else is an error wrapping ErrInvalidDigest.
func ParseContentDigest(s string) (v1.Hash, error) {
	return parse(s, ValidateContentDigest, "sha256:<64 hex digits> or sha512:<128 hex digits>")
}

func parse(s string, validate func(v1.Hash) error, want string) (v1.Hash, error) {
	alg, hex, ok := strings.Cut(s, ":")
	if !ok {
		return v1.Hash{}, fmt.Errorf("%w %q: want %s", ErrInvalidDigest, clip(s), want)
	}
	h := v1.Hash{Algorithm: alg, Hex: hex}
	if err := validate(h); err != nil {
		return v1.Hash{}, err
	}
	return h, nil
}

// ValidateDigest reports whether d is safe to use as a file name or object
// key: algorithm "sha256" and exactly 64 lower-case hex digits. The error
// wraps ErrInvalidDigest and says what was wrong.
func ValidateDigest(d v1.Hash) error {
	if d.Algorithm != "sha256" {
		return unsupported(d, "only sha256")
	}
	return checkHex(d)
}

// ValidateContentDigest reports whether d is a well-formed digest of an
// algorithm the OCI image spec registers (ParseContentDigest): sha256
// with 64 or sha512 with 128 lower-case hex digits. The error wraps
// ErrInvalidDigest and says what was wrong.
func ValidateContentDigest(d v1.Hash) error {
	if _, ok := hexLen[d.Algorithm]; !ok {
		return unsupported(d, "only sha256 and sha512")
	}
	return checkHex(d)
}

func unsupported(d v1.Hash, only string) error {
	if d.Algorithm == "" && d.Hex == "" {
		return fmt.Errorf("%w: empty digest", ErrInvalidDigest)
	}
	return fmt.Errorf("%w %q: algorithm %q is not supported, %s", ErrInvalidDigest, clip(d.String()), clip(d.Algorithm), only)
}

// checkHex checks d.Hex against the length of d's algorithm, which is one
// of hexLen's.
func checkHex(d v1.Hash) error {
	if n := hexLen[d.Algorithm]; len(d.Hex) != n {
		return fmt.Errorf("%w %q: want %d hex digits, got %d bytes", ErrInvalidDigest, clip(d.String()), n, len(d.Hex))
	}
	for i := 0; i < len(d.Hex); i++ {
		c := d.Hex[i]
		if ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') {
			continue
		}
		if 'A' <= c && c <= 'F' {
			return fmt.Errorf("%w %q: hex digits must be lower-case", ErrInvalidDigest, clip(d.String()))
		}
		what := fmt.Sprintf("byte 0x%02x", c) // not %q: one byte of UTF-8 would print as another character
		if c >= 0x20 && c < 0x7f {
			what = fmt.Sprintf("'%c'", c)
		}
		return fmt.Errorf("%w %q: %s at %d is not a hex digit", ErrInvalidDigest, clip(d.String()), what, i)
	}
	return nil
}

// clip keeps error messages short when given hostile input.
func clip(s string) string {
	const max = 100
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// MaxManifestBytes bounds every manifest, index and image config that
// this module reads, from a registry or from a store: registries refuse
// manifests larger than 4 MiB (distribution, Harbor, Docker Hub), so a
// larger one is hostile or broken, and reading it whole is a way to run
// a process out of memory.
const MaxManifestBytes = 4 << 20
