// Command mirror shows the pull-through registry mirror, with no network
// beyond loopback: it starts an in-process upstream registry on 127.0.0.1
// with a linux/amd64 + linux/arm64 image, serves a mirror of it from a
// localfs store (what `buildcache serve` runs), and pulls the image
// through the mirror with go-containerregistry's client, as a daemon
// would: cold (everything fetched once), warm (one HEAD upstream), and
// with the upstream stopped (served stale from the store). It prints the
// upstream requests of each step.
//
//	go run ./examples/mirror [-cache DIR] [-kib 512]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/mirror"
	"github.com/buildcache/buildcache/regclient"
	"github.com/buildcache/buildcache/registry"
)

func main() {
	cacheDir := flag.String("cache", "", "store directory (default: a temporary one, removed at exit)")
	kib := flag.Int64("kib", 512, "size of each layer, in KiB")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *cacheDir, *kib); err != nil {
		fmt.Fprintln(os.Stderr, "mirror:", err)
		os.Exit(1)
	}
}

// upstream is an in-process registry counting its requests by method and
// kind, which can be stopped (it then answers 503, as a failing registry).
type upstream struct {
	mu       sync.Mutex
	requests map[string]int // "HEAD manifest", "GET blob", ...
	down     bool
	reg      http.Handler
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	if r.URL.Path != "/v2/" {
		kind := "manifest"
		if strings.Contains(r.URL.Path, "/blobs/") {
			kind = "blob"
		}
		u.requests[r.Method+" "+kind]++
	}
	down := u.down
	u.mu.Unlock()
	if down {
		http.Error(w, "upstream stopped", http.StatusServiceUnavailable)
		return
	}
	u.reg.ServeHTTP(w, r)
}

// take returns the requests counted since the last call.
func (u *upstream) take() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.requests) == 0 {
		u.requests = map[string]int{}
		return "none"
	}
	var parts []string
	for k, n := range u.requests {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(parts)
	u.requests = map[string]int{}
	return strings.Join(parts, ", ")
}

func (u *upstream) stop() {
	u.mu.Lock()
	u.down = true
	u.mu.Unlock()
}

// serve serves h (the upstream) on a fresh loopback port until the
// returned stop.
func serve(h http.Handler) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return l.Addr().String(), func() { srv.Close() }, nil
}

func run(ctx context.Context, out io.Writer, cacheDir string, kib int64) error {
	if cacheDir == "" {
		tmp, err := os.MkdirTemp("", "buildcache-mirror-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		cacheDir = tmp
	}

	up := &upstream{requests: map[string]int{}, reg: ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))}
	upAddr, stopUp, err := serve(up)
	if err != nil {
		return err
	}
	defer stopUp()
	if err := pushImage(ctx, upAddr+"/team/app:v1", kib<<10); err != nil {
		return err
	}
	up.take()

	// The mirror: what `buildcache serve --upstream example.test=http://UPSTREAM --cache DIR` runs.
	store, err := localfs.Open(cacheDir)
	if err != nil {
		return err
	}
	defer store.Close()
	client, err := regclient.New(regclient.WithRetry(1, time.Millisecond, time.Millisecond))
	if err != nil {
		return err
	}
	resolver, err := registry.NewResolver(store, registry.WithClient(client))
	if err != nil {
		return err
	}
	m, err := mirror.New(resolver,
		mirror.WithUpstream(upAddr),
		mirror.WithUpstreams(map[string]string{"example.test": upAddr}))
	if err != nil {
		return err
	}
	// Served as buildcache serve serves it: at the end, requests in
	// progress get a grace period, then the mirror is closed.
	srv, err := mirror.NewServer(m, mirror.WithCloseAfter(m))
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mirrorAddr := l.Addr().String()
	serveCtx, stopMirror := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, l) }()
	defer func() { stopMirror(); <-served }()
	ref := mirrorAddr + "/team/app:v1"
	fmt.Fprintf(out, "upstream %s, mirror %s, store %s\n", upAddr, mirrorAddr, store.Dir())
	fmt.Fprintf(out, "pulling %s (2 platforms, 3 layers of %d KiB each) through the mirror\n\n", ref, kib)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "step\tpulled\ttime\tupstream requests")
	for _, step := range []struct {
		label  string
		before func()
	}{
		{"cold", nil},
		{"warm", nil},
		{"upstream stopped", up.stop},
	} {
		if step.before != nil {
			step.before()
		}
		start := time.Now()
		d, err := pull(ctx, ref)
		if err != nil {
			return fmt.Errorf("%s pull: %w", step.label, err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", step.label, d.Hex[:12], time.Since(start).Round(time.Millisecond), up.take())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nwarm: one HEAD revalidates the tag, every blob comes from the store;")
	fmt.Fprintln(out, "upstream stopped: the HEAD fails and the cached copy is served (stale-if-error).")
	return nil
}

// pushImage pushes to ref an index of two random images, linux/amd64 and
// linux/arm64, of three layers of layerBytes each.
func pushImage(ctx context.Context, ref string, layerBytes int64) error {
	tag, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, platform := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}} {
		img, err := random.Image(layerBytes, 3)
		if err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &platform}})
	}
	return remote.WriteIndex(tag, idx, remote.WithContext(ctx))
}

// pull pulls every platform of ref, reading and verifying each layer.
func pull(ctx context.Context, ref string) (v1.Hash, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	idx, err := remote.Index(r, remote.WithContext(ctx))
	if err != nil {
		return v1.Hash{}, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	if len(im.Manifests) == 0 {
		return v1.Hash{}, errors.New("an empty index")
	}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return v1.Hash{}, err
		}
		if err := validate.Image(img); err != nil {
			return v1.Hash{}, fmt.Errorf("%s: %w", desc.Platform, err)
		}
	}
	return idx.Digest()
}
