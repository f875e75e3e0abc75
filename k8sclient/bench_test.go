package k8sclient_test

// Benchmarks for the three questions:
//
//	go test -run '^$' -bench . -benchtime 1x ./k8sclient/   # (a), slow: ~40 s uncached
//	go test -run '^$' -bench 'ExistsVsList|Hit' ./k8sclient/
//
// and for the heap a Client holds (issue 24):
//
//	go test -run '^$' -bench Held -benchtime 1x ./k8sclient/
//
// The API-server double runs in a child process (this test binary, started
// again with K8SCLIENT_BENCH_SERVER set), so that B/op and allocs/op count
// the client's allocations only, not the server's.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/buildcache/buildcache/internal/testserver"
	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
	"github.com/buildcache/buildcache/memory"
)

const benchServerEnv = "K8SCLIENT_BENCH_SERVER"

func TestMain(m *testing.M) {
	if seed := os.Getenv(benchServerEnv); seed != "" {
		serveForBenchmark(seed)
		return
	}
	code := m.Run()
	testserver.StopSharedKube()
	os.Exit(code)
}

// serveForBenchmark runs in the child: it seeds a double ("repos=N",
// "jobs=N" in namespace "scheduler"), prints its URL and the URL of a
// control server answering /count?verb=&resource= and /reset, and serves
// until its stdin is closed.
func serveForBenchmark(seed string) {
	srv := k8stest.NewServer()
	defer srv.Close()
	for part := range strings.SplitSeq(seed, ",") {
		kind, n, _ := strings.Cut(part, "=")
		count, _ := strconv.Atoi(n)
		for i := range count {
			var err error
			switch kind {
			case "repos":
				_, err = srv.Create(repos, k8stest.NewPackageRepository(fmt.Sprintf("repo-%d", i), "https://example.com"))
			case "jobs":
				_, err = srv.Create(jobs, k8stest.NewJob("scheduler", fmt.Sprintf("task-%05d", i), nil))
			case "types": // one Job in each of count more resource types
				gvr := benchType(i)
				srv.Register(k8stest.Resource{GVR: gvr, Kind: "Job", Namespaced: true})
				_, err = srv.Create(gvr, k8stest.NewJob("scheduler", "task-00000", nil))
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, srv.Count(r.URL.Query().Get("verb"), r.URL.Query().Get("resource")))
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) { srv.ResetCounts() })
	ctl := &http.Server{Handler: mux}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go ctl.Serve(l)
	fmt.Printf("%s http://%s\n", srv.URL, l.Addr())
	io.Copy(io.Discard, os.Stdin)
	ctl.Close()
}

// benchType is the i-th resource type "types=N" seeds.
func benchType(i int) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "bench.test", Version: "v1", Resource: fmt.Sprintf("jobs%d", i)}
}

// remote is a double in a child process.
type remote struct {
	url, ctl string
}

func startRemote(b *testing.B, seed string) *remote {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+seed)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("the benchmark server did not start: %v", err)
	}
	url, ctl, _ := strings.Cut(strings.TrimSpace(line), " ")
	return &remote{url: url, ctl: ctl}
}

func (r *remote) count(b *testing.B, verb, resource string) int {
	b.Helper()
	resp, err := http.Get(r.ctl + "/count?verb=" + verb + "&resource=" + resource)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	n, _ := strconv.Atoi(string(body))
	return n
}

func (r *remote) reset(b *testing.B) {
	b.Helper()
	resp, err := http.Get(r.ctl + "/reset")
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
}

// (a) Glasskube's throttling: 200 Gets spread over 10 PackageRepositories,
// through a dynamic client as a user builds it (default QPS 5, Burst 10),
// uncached and cached. Each iteration starts with a new client (a full
// token bucket) and, cached, an empty cache.
func BenchmarkThrottling(b *testing.B) {
	r := startRemote(b, "repos=10")
	ctx := context.Background()
	newDyn := func() dynamic.Interface {
		dyn, err := dynamic.NewForConfig(&rest.Config{Host: r.url})
		if err != nil {
			b.Fatal(err)
		}
		return dyn
	}
	run := func(b *testing.B, get func(dyn dynamic.Interface) func(name string) error) {
		r.reset(b)
		for b.Loop() {
			g := get(newDyn())
			for i := range 200 {
				if err := g(fmt.Sprintf("repo-%d", i%10)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(r.count(b, k8stest.VerbGet, "packagerepositories"))/float64(b.N), "requests/op")
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/op")
	}
	b.Run("uncached", func(b *testing.B) {
		run(b, func(dyn dynamic.Interface) func(string) error {
			return func(name string) error {
				_, err := dyn.Resource(repos).Get(ctx, name, metav1.GetOptions{})
				return err
			}
		})
	})
	b.Run("cached", func(b *testing.B) {
		run(b, func(dyn dynamic.Interface) func(string) error {
			c, err := k8sclient.New(dyn)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(c.Close)
			return func(name string) error {
				_, err := c.Get(ctx, repos, "", name)
				return err
			}
		})
	})
}

// unthrottled is a rest.Config without client-go's rate limiter, for the
// benchmarks that measure a call's cost rather than the limiter's waits.
func unthrottled(url string) *rest.Config { return &rest.Config{Host: url, QPS: -1} }

// (b) DolphinScheduler's jobExist: "List every Job of the namespace and
// filter by name" against Exists (one GET by name), in a namespace of
// 10,000 finished Jobs. B/op is the point.
func BenchmarkExistsVsListFilter(b *testing.B) {
	r := startRemote(b, "jobs=10000")
	ctx := context.Background()
	cfg := unthrottled(r.url)
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	const target = "task-09999"
	// The server makes each Job's protobuf encoding on first use: make
	// them before timing.
	if _, err := cs.BatchV1().Jobs("scheduler").List(ctx, metav1.ListOptions{}); err != nil {
		b.Fatal(err)
	}

	b.Run("list-filter/typed", func(b *testing.B) {
		for b.Loop() {
			l, err := cs.BatchV1().Jobs("scheduler").List(ctx, metav1.ListOptions{})
			if err != nil {
				b.Fatal(err)
			}
			found := false
			for _, j := range l.Items {
				if j.Name == target {
					found = true
				}
			}
			if !found {
				b.Fatal("not found")
			}
		}
	})
	b.Run("list-filter/dynamic", func(b *testing.B) {
		for b.Loop() {
			l, err := dyn.Resource(jobs).Namespace("scheduler").List(ctx, metav1.ListOptions{})
			if err != nil {
				b.Fatal(err)
			}
			found := false
			for _, j := range l.Items {
				if j.GetName() == target {
					found = true
				}
			}
			if !found {
				b.Fatal("not found")
			}
		}
	})
	c, err := k8sclient.New(dyn)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.Run("exists/fresh", func(b *testing.B) { // one GET every call
		for b.Loop() {
			if ok, err := c.JobExists(ctx, "scheduler", target, k8sclient.Fresh()); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("exists/cached", func(b *testing.B) {
		for b.Loop() {
			if ok, err := c.JobExists(ctx, "scheduler", target); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	tj, err := k8sclient.NewTyped(cs.BatchV1().Jobs)
	if err != nil {
		b.Fatal(err)
	}
	defer tj.Close()
	b.Run("exists/typed-fresh", func(b *testing.B) {
		for b.Loop() {
			if ok, err := tj.Exists(ctx, "scheduler", target, k8sclient.Fresh()); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// (c) A cache hit against an informer lister's Get of the same Job, in a
// namespace of 1,000 Jobs: the lister holds them all (held-bytes is the
// heap each took to set up), the cache only the one asked for.
func BenchmarkHit(b *testing.B) {
	r := startRemote(b, "jobs=1000")
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(unthrottled(r.url))
	const target = "task-00500"

	h0 := heapAlloc()
	c, err := k8sclient.New(dyn)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Get(ctx, jobs, "scheduler", target); err != nil {
		b.Fatal(err)
	}
	cacheHeld := heapAlloc() - h0

	h0 = heapAlloc()
	stop := make(chan struct{})
	f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	inf := f.ForResource(jobs)
	f.Start(stop)
	defer func() { close(stop); f.Shutdown() }()
	if !cache.WaitForCacheSync(stop, inf.Informer().HasSynced) {
		b.Fatal("informer did not sync")
	}
	lister := inf.Lister().ByNamespace("scheduler")
	informerHeld := heapAlloc() - h0

	report := func(b *testing.B, held uint64, objects int) {
		b.ReportMetric(float64(held), "held-bytes")
		b.ReportMetric(float64(objects), "held-objects")
	}
	b.Run("cache/copy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Get(ctx, jobs, "scheduler", target); err != nil {
				b.Fatal(err)
			}
		}
		report(b, cacheHeld, 1)
	})
	b.Run("cache/shared", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Get(ctx, jobs, "scheduler", target, k8sclient.Shared()); err != nil {
				b.Fatal(err)
			}
		}
		report(b, cacheHeld, 1)
	})
	b.Run("informer-lister", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := lister.Get(target); err != nil {
				b.Fatal(err)
			}
		}
		report(b, informerHeld, len(inf.Informer().GetStore().ListKeys()))
	})
	// The floor under cache/shared: a memory.Cache hit alone, with a
	// string key and a load function made once.
	floor, err := memory.New[string, *unstructured.Unstructured]()
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	obj, err := c.Get(ctx, jobs, "scheduler", target)
	if err != nil {
		b.Fatal(err)
	}
	load := func(context.Context) (*unstructured.Unstructured, error) { return obj, nil }
	floor.Get(ctx, "scheduler/"+target, load)
	b.Run("memory.Cache-floor", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := floor.Get(ctx, "scheduler/"+target, load); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache/shared-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Get(ctx, jobs, "scheduler", target, k8sclient.Shared()); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("informer-lister-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := lister.Get(target); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkHeld reports the heap a Client holds (heap-bytes: live heap
// after a GC, from before New to after the reads) once it has read
// objects of one type (Jobs, one GET each, default options), or one
// object of each of 10 types. Run it with -benchtime 1x: each iteration
// reads everything again through a new Client.
func BenchmarkHeld(b *testing.B) {
	r := startRemote(b, "jobs=10000,types=10")
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(unthrottled(r.url))
	var types []schema.GroupVersionResource
	for i := range 10 {
		types = append(types, benchType(i))
	}
	// Warm client-go up (connections, decoders) on every type first, so
	// that its one-off allocations are not counted as the cache's.
	for _, gvr := range append(types, jobs) {
		if _, err := dyn.Resource(gvr).Namespace("scheduler").Get(ctx, "task-00000", metav1.GetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		types   []schema.GroupVersionResource
		objects int // per type
	}{
		{"1-object", []schema.GroupVersionResource{jobs}, 1},
		{"100-objects", []schema.GroupVersionResource{jobs}, 100},
		{"10000-objects", []schema.GroupVersionResource{jobs}, 10000},
		{"10-types", types, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var held uint64
			for b.Loop() {
				h0 := heapAlloc()
				c, err := k8sclient.New(dyn)
				if err != nil {
					b.Fatal(err)
				}
				for _, gvr := range tc.types {
					for i := range tc.objects {
						if _, err := c.Get(ctx, gvr, "scheduler", fmt.Sprintf("task-%05d", i), k8sclient.Shared()); err != nil {
							b.Fatal(err)
						}
					}
				}
				held = heapAlloc() - h0
				c.Close()
			}
			b.ReportMetric(float64(held), "heap-bytes")
			b.ReportMetric(float64(held)/float64(len(tc.types)*tc.objects), "heap-bytes/object")
		})
	}
}
