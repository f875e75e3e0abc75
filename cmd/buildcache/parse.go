package main

import (
	"os"
	"path/filepath"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/buildcache/buildcache/internal/units"
)

// sizeValue is a pflag.Value for a size, read as buildcache.Open reads
// sizes in URLs (units.ParseSize): "1048576", "500MB" (10^6 bytes each),
// "10GiB" or "10G" (2^30), "1.5 GB"; units are case-insensitive. Negative
// sizes and sizes of 2^63 bytes or more are errors.
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil || *v.n == 0 {
		return "0"
	}
	return humanize.IBytes(uint64(*v.n))
}

func (v sizeValue) Set(s string) error {
	n, err := units.ParseSize(s)
	if err != nil {
		return err
	}
	*v.n = n
	return nil
}

func (v sizeValue) Type() string { return "size" }

// durationValue is a pflag.Value for a duration, read as buildcache.Open
// reads durations in URLs (units.ParseDuration): Go's syntax ("90m",
// "1h30m", "0s") and days ("7d", "1.5d"). Negative durations are errors.
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil || *v.d == 0 {
		return "0" // what pflag's help takes for an unset flag
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := units.ParseDuration(s)
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
