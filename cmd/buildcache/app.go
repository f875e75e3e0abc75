package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/netfail"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

// Exit codes. They are part of the command's interface: keep doc.go and
// exitCodesHelp in step with them.
const (
	exitOK        = 0 // success; a stale answer still counts
	exitFailure   = 1 // anything not listed below
	exitUsage     = 2 // bad flag, size, duration, platform or image reference
	exitNotCached = 3 // offline (policy never, registry not answering) and not cached
	exitCorrupt   = 4 // verify found bad blobs, or a download did not match its digest
	exitNoSpace   = 5 // not enough space in the cache
	exitUntrusted = 6 // refused by the trust policy
)

const exitCodesHelp = `Exit codes:
  0  ok (a stale answer, served from the cache because the registry failed,
     is ok too: a warning on stderr names the registry's error)
  1  any other failure
  2  usage error: bad flag, size, duration, platform or image reference
  3  offline and not cached: --policy never, or the registry unreachable
     (no answer at all), and the image is not (completely) in the cache
  4  corrupt: verify found bad blobs (without --remove), or a download
     did not match its digest
  5  not enough space in the cache
  6  refused by the trust policy (--trust-policy): unsigned, signed with
     another key, a bad signature or another identity
When several images fail, the exit code is that of the first one.`

const seeExitCodes = "Exit codes: 0 ok, 1 failure, 2 usage error, 3 not cached, 4 corrupt, 5 no space, 6 untrusted\n(buildcache --help says more)."

// usageError marks an error in how the command was called: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// reportedError is a failure the command has already told the user about,
// item by item; only its exit code is left to deliver.
type reportedError struct{ code int }

func (e *reportedError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var ue *usageError
	var re *reportedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &re):
		return re.code
	case errors.As(err, &ue), errors.Is(err, &name.ErrBadName{}):
		return exitUsage
	case errors.Is(err, cache.ErrUntrusted):
		return exitUntrusted
	case errors.Is(err, cache.ErrNoSpace):
		return exitNoSpace
	case errors.Is(err, cache.ErrCorrupt), errors.Is(err, cache.ErrDigestMismatch):
		return exitCorrupt
	case errors.Is(err, cache.ErrOffline), errors.Is(err, cache.ErrNotFound):
		return exitNotCached
	}
	// The resolver returns the registry's error, not ErrOffline, when the
	// registry does not answer and nothing is cached: offline all the same.
	var rerr *regclient.RemoteError
	if errors.As(err, &rerr) && rerr.Status == 0 && netfail.Unreachable(rerr.Err) {
		return exitNotCached
	}
	return exitFailure
}

// app holds one invocation's settings and outputs.
type app struct {
	stdout, stderr io.Writer

	cacheDir string                 // --cache: a directory or a cache URL
	cache    cache.LayerCacheCloser // opened by openCache, closed by run
	cacheLog *slog.Logger           // gets the cache's records (a tier's far tier warnings); nil: closeCache warns
	json     bool
	insecure []string
	timeout  time.Duration // per registry wait; 0: the registry package's defaults

	started   bool // a command began to run: later errors are not usage errors
	wroteJSON bool // the command printed its JSON document
}

// run executes the command line args (without the program name) and
// returns the exit code. It is main without the process: tests call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	a.closeCache()
	if err != nil && !a.started {
		// Cobra failed before any command ran: an unknown command or
		// flag, a missing argument.
		var ue *usageError
		if !errors.As(err, &ue) {
			err = &usageError{err}
		}
	}
	code := exitCode(err)
	err = redactArgs(err, args)
	var re *reportedError
	if err != nil && !errors.As(err, &re) {
		fmt.Fprintf(stderr, "buildcache: %v\n", err)
		if code == exitUsage && !a.started {
			fmt.Fprintln(stderr, "Run 'buildcache --help' for usage.")
		}
	}
	if err != nil && a.json && !a.wroteJSON {
		a.printJSON(struct {
			Error    string `json:"error"`
			ExitCode int    `json:"exit_code"`
		}{err.Error(), code})
	}
	return code
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "buildcache",
		Short: "Keep base images and build blobs in a local cache",
		Long: `buildcache resolves container base images to digests, keeps them in a
local cache directory (an OCI image layout) and revalidates them with one
HEAD request, so builds stop downloading what they already have. --cache
takes the directory or any cache URL (file://, s3://, oci://, tier://,
mem://): warm and resolve work on every cache, ls on those that keep
their roots, gc and verify on a local directory (or a tier's near one).

` + timeoutsHelp + "\n\n" + exitCodesHelp,
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(a.stderr)
			_ = cmd.Usage()
			return usagef("no command given")
		},
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		Version:           buildVersion(),
	}
	root.SetVersionTemplate("buildcache {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.cacheDir, "cache", osDefaultCacheDir(), "the cache: a `DIR` (default $XDG_CACHE_HOME/buildcache, else ~/.cache/buildcache) or a URL: file:///dir, s3://bucket/prefix?..., oci://host/repo, tier://?near=URL&far=URL, mem://")
	pf.BoolVar(&a.json, "json", false, "print one JSON document on stdout, also on failure ({\"error\": ..., \"exit_code\": ...})")
	pf.StringArrayVar(&a.insecure, "insecure-registry", nil, "talk plain HTTP to this registry `host:port` (repeatable; only loopback registries use it otherwise)")
	pf.Var(durationValue{&a.timeout}, "timeout", timeoutHelp)

	root.AddCommand(a.warmCommand(), a.resolveCommand(), a.lsCommand(), a.verifyCommand(), a.gcCommand(), a.statsCommand(), a.serveCommand(), a.nodeConfigCommand())
	return root
}

// runE marks the command as started, so its errors keep their own exit
// codes rather than counting as usage errors.
func (a *app) runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.started = true
		return fn(cmd, args)
	}
}

// timeoutHelp says what --timeout bounds: each wait for a registry, not
// the whole command, so that a registry gone silent is served stale.
const timeoutHelp = "wait at most `D` for a registry to connect, answer or send more of a body, per try (0: 30s; TLS handshake 10s); not a deadline for the whole command"

const timeoutsHelp = `Timeouts:
  --timeout D bounds each wait for a registry: connecting, the TLS
  handshake, the answer's headers, the next bytes of a body (default 30s,
  the handshake 10s). A registry silent for longer counts as unreachable:
  the try is retried, then an uncached image exits 3. It is not a deadline
  for the whole command, as a download that keeps moving may take longer:
  use timeout(1) for that. A cached image waits for a failing registry at
  most --stale-budget (warm, resolve, serve; default 5s), whatever it does
  (silent, refusing, 5xx, 429, a longer Retry-After), and is then served
  stale (exit 0 with a warning).`

// staleBudgetHelp says what --stale-budget bounds.
const staleBudgetHelp = "serve a cached image stale once a failing registry (silent, refusing, 5xx, 429) has been waited for `D`, or at once when its Retry-After is longer or it is known to be failing; 0: wait as for an uncached image"

// newClient is the registry client the flags describe, speaking plain
// HTTP to the --insecure-registry hosts and to insecure.
func (a *app) newClient(insecure ...string) (*regclient.Client, error) {
	opts := []regclient.Option{regclient.WithInsecureRegistries(append(slices.Clone(a.insecure), insecure...)...)}
	if d := a.timeout; d > 0 {
		opts = append(opts, regclient.WithTimeouts(regclient.Timeouts{Connect: d, TLSHandshake: d, ResponseHeader: d, Stall: d}))
	}
	return regclient.New(opts...)
}

func (a *app) newResolver(store cache.LayerCache, opts ...registry.Option) (*registry.Resolver, error) {
	c, err := a.newClient()
	if err != nil {
		return nil, err
	}
	return registry.NewResolver(store, append([]registry.Option{registry.WithClient(c)}, opts...)...)
}

func (a *app) printJSON(v any) error {
	a.wroteJSON = true
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// warnf prints a warning on stderr.
func (a *app) warnf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "warning: "+format+"\n", args...)
}

// isTerminal reports whether w is a terminal, for progress bars.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
