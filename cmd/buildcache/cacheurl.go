package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"

	"github.com/buildcache/buildcache"
	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/redact"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/tier"
)

// --cache is a directory (a local store, as it always was) or any URL
// buildcache.Open takes. Every command works on a cache.LayerCache and
// finds in it, with cache.As, what else it needs: ls the roots, gc,
// verify and stats a local store (*localfs.Store), which As finds in a
// tier's near tier too (its roots are the near tier's already). A cache
// that lacks what a command needs is refused with a usage error naming
// both.

// localStore finds the local store in c (c itself, or a tier's near
// tier); near reports that it is a tier's.
func localStore(c cache.LayerCache) (s *localfs.Store, near bool, ok bool) {
	s, ok = cache.As[*localfs.Store](c)
	return s, ok && cache.LayerCache(s) != c, ok
}

// persistentRoots reports whether c keeps its roots (cache.RootIndex)
// beyond this process: a tier keeps them in memory unless its near tier
// keeps them.
func persistentRoots(c cache.LayerCache) (cache.RootIndex, bool) {
	ri, ok := cache.As[cache.RootIndex](c)
	if !ok {
		return nil, false
	}
	if t, isTier := c.(cache.Tiered); isTier {
		if _, ok := persistentRoots(t.Near()); !ok {
			return nil, false
		}
	}
	return ri, true
}

// isURL tells a cache URL from a directory: a scheme and "://".
func isURL(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	return ok && scheme != "" && !strings.ContainsAny(scheme, `/\`)
}

// openCache opens --cache. With existing, the command reads or tidies the
// cache (ls, stats, verify, gc): a local directory that is neither missing,
// empty nor a cache already is refused rather than made into one.
func (a *app) openCache(ctx context.Context, existing bool) (cache.LayerCache, error) {
	if a.cache != nil {
		return a.cache, nil
	}
	raw := a.cacheDir
	if raw == "" {
		return nil, usagef("no cache: pass --cache DIR or URL, or set XDG_CACHE_HOME or HOME")
	}
	var c cache.LayerCacheCloser
	if !isURL(raw) {
		if existing {
			if err := checkIsStore(raw); err != nil {
				return nil, err
			}
		}
		s, err := localfs.Open(raw)
		if err != nil {
			return nil, err
		}
		c = s
	} else {
		if u, err := url.Parse(raw); err == nil && strings.EqualFold(u.Scheme, "file") && existing && u.Path != "" {
			if err := checkIsStore(u.Path); err != nil {
				return nil, err
			}
		}
		var err error
		if c, err = (&buildcache.URLMux{Logger: a.cacheLog}).Open(ctx, raw); err != nil {
			// Open's errors name the URL without its secrets. Most are
			// in the URL (scheme, parameters, credentials in it): usage
			// errors; a local directory that cannot be opened is not.
			err = &redactedError{"--cache: " + strings.TrimPrefix(err.Error(), "buildcache: "), err}
			var pe *fs.PathError
			if errors.As(err, &pe) || errors.Is(err, cache.ErrNoSpace) {
				return nil, err
			}
			return nil, &usageError{err}
		}
	}
	a.cache = c
	return c, nil
}

// closeCache finishes with the cache at the end of the command: Close
// waits for a tier's background far writes and flushes a local store's
// lifetime counters. A tier whose far tier failed is a warning, unless
// the cache logged it already (serve).
func (a *app) closeCache() {
	if a.cache == nil {
		return
	}
	if err := a.cache.Close(); err != nil {
		a.warnf("%v", err)
	}
	if t, ok := cache.As[*tier.Cache](a.cache); ok && a.cacheLog == nil {
		if err := t.LastFarError(); err != nil {
			a.warnf("the far tier failed (far errors: %d; the near tier went on): %v", t.StatsByTier().FarErrors, err)
		}
	}
	a.cache = nil
}

// cacheName is --cache as it may be printed: a directory as it is, a URL
// without credentials or query string, except that a tier's near and far
// URLs are named (each redacted).
func (a *app) cacheName() string {
	raw := a.cacheDir
	if !isURL(raw) {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redact.String(raw)
	}
	if strings.EqualFold(u.Scheme, "tier") {
		q := u.Query()
		return fmt.Sprintf("tier://?near=%s&far=%s", redact.String(q.Get("near")), redact.String(q.Get("far")))
	}
	return redact.URL(u)
}

// cacheScheme is the scheme of --cache: "file" for a directory.
func (a *app) cacheScheme() string {
	if !isURL(a.cacheDir) {
		return "file"
	}
	scheme, _, _ := strings.Cut(a.cacheDir, "://")
	return strings.ToLower(scheme)
}

// refuse is the usage error of a command that needs what the cache lacks.
func (a *app) refuse(command, needs string) error {
	return usagef("%s needs %s; the cache %s (scheme %s) has none: pass --cache with a local directory, file:// URL, or a tier:// whose near tier is one",
		command, needs, a.cacheName(), a.cacheScheme())
}

// localStoreFor finds the local store a command works on, telling the
// user when it is a tier's near tier.
func (a *app) localStoreFor(c cache.LayerCache, command, needs string) (*localfs.Store, error) {
	s, near, ok := localStore(c)
	if !ok {
		return nil, a.refuse(command, needs)
	}
	if near {
		fmt.Fprintf(a.stderr, "%s: working on the near tier %s of %s (the far tier is left alone)\n", command, s.Dir(), a.cacheName())
	}
	return s, nil
}
