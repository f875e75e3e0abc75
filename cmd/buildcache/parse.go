package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/buildcache/buildcache/internal/units"
)

// parseSize parses a byte count with an optional unit, as buildcache.Open
// reads sizes in URLs: "1048576", "500MB" (10^6 bytes each), "10GiB" or
// "10G" (2^30), "1.5 GB"; units are case-insensitive. Negative sizes are
// errors.
func parseSize(s string) (int64, error) {
	n, err := units.ParseSize(s)
	if err == nil && n < 0 {
		// units.ParseSize lets exactly 2^63 through, converted to a
		// negative int64.
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n, err
}

// parseDuration parses Go's duration syntax ("90m", "1h30m", "0s") and
// days ("7d", "1.5d"), as buildcache.Open reads durations in URLs.
// Negative durations are errors.
func parseDuration(s string) (time.Duration, error) { return units.ParseDuration(s) }

// sizeValue is a pflag.Value for a size in human units.
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil || *v.n == 0 {
		return "0"
	}
	return humanize.IBytes(uint64(*v.n))
}

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.n = n
	return nil
}

func (v sizeValue) Type() string { return "size" }

// durationValue is a pflag.Value for a duration that may use days.
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil || *v.d == 0 {
		return "0" // what pflag's help takes for an unset flag
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func (v durationValue) Type() string { return "duration" }

// defaultCacheDir is $XDG_CACHE_HOME/buildcache, or ~/.cache/buildcache
// when XDG_CACHE_HOME is unset or not absolute (the XDG base directory
// specification says to ignore relative paths there). It is "" when
// neither is known.
func defaultCacheDir(getenv func(string) string, home func() (string, error)) string {
	if x := getenv("XDG_CACHE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "buildcache")
	}
	h, err := home()
	if err != nil || h == "" {
		return ""
	}
	return filepath.Join(h, ".cache", "buildcache")
}

func osDefaultCacheDir() string { return defaultCacheDir(os.Getenv, os.UserHomeDir) }
