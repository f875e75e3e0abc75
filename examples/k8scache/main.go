// Command k8scache shows the two cases the k8sclient package was made for,
// against an in-process Kubernetes API-server double on 127.0.0.1 (no
// network beyond loopback), with real client-go clients built as a user
// builds them (default QPS 5, Burst 10):
//
//   - Glasskube: an install reads the same few PackageRepositories over and
//     over. Uncached, client-go's rate limiter makes every read after the
//     tenth wait about 200 ms; cached, one request per repository.
//   - DolphinScheduler: jobExist listed every Job of a namespace (thousands
//     of finished ones) to find one by name. JobExists sends one GET by
//     name, and remembers the answer for the TTL.
//
// It prints requests, time and bytes for each.
//
//	go run ./examples/k8scache [-lookups 40] [-repos 10] [-jobs 10000]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/buildcache/buildcache/k8sclient"
	"github.com/buildcache/buildcache/k8sclient/k8stest"
)

func main() {
	lookups := flag.Int("lookups", 40, "PackageRepository reads in the Glasskube case")
	repos := flag.Int("repos", 10, "PackageRepositories they are spread over")
	jobs := flag.Int("jobs", 10000, "finished Jobs in the DolphinScheduler namespace")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *lookups, *repos, *jobs); err != nil {
		fmt.Fprintln(os.Stderr, "k8scache:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, lookups, repos, jobs int) error {
	srv := k8stest.NewServer()
	defer srv.Close()
	if err := glasskube(ctx, out, srv, lookups, repos); err != nil {
		return err
	}
	fmt.Fprintln(out)
	return dolphinScheduler(ctx, out, srv, jobs)
}

func glasskube(ctx context.Context, out io.Writer, srv *k8stest.Server, lookups, repos int) error {
	gvr := k8stest.PackageRepositoriesGVR
	for i := range repos {
		if _, err := srv.Create(gvr, k8stest.NewPackageRepository(fmt.Sprintf("repo-%d", i), "https://packages.dl.glasskube.dev/packages")); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "Glasskube: %d reads of %d PackageRepositories (client-go default QPS 5, Burst 10)\n", lookups, repos)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tGET requests\ttime\tlongest read\t")

	read := func(label string, get func(name string) error) error {
		srv.ResetCounts()
		var longest time.Duration
		start := time.Now()
		for i := range lookups {
			t := time.Now()
			if err := get(fmt.Sprintf("repo-%d", i%repos)); err != nil {
				return err
			}
			longest = max(longest, time.Since(t))
		}
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t\n", label, srv.Count("get", gvr.Resource),
			time.Since(start).Round(time.Millisecond), longest.Round(time.Millisecond))
		return nil
	}

	// A fresh client each, so each starts with a full token bucket.
	dyn, err := dynamic.NewForConfig(srv.Config())
	if err != nil {
		return err
	}
	if err := read("uncached dynamic client", func(name string) error {
		_, err := dyn.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}
	dyn, err = dynamic.NewForConfig(srv.Config())
	if err != nil {
		return err
	}
	c, err := k8sclient.New(dyn, k8sclient.WithTTLFor(gvr, 5*time.Minute))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := read("k8sclient, TTL 5m", func(name string) error {
		_, err := c.Get(ctx, gvr, "", name)
		return err
	}); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := c.Stats()[gvr]
	fmt.Fprintf(out, "cache: %d hits, %d misses, %d requests avoided\n", s.Hits, s.Misses, s.RequestsAvoided)
	return nil
}

func dolphinScheduler(ctx context.Context, out io.Writer, srv *k8stest.Server, jobs int) error {
	const ns = "dolphinscheduler"
	for i := range jobs {
		if _, err := srv.Create(k8stest.JobsGVR, k8stest.NewJob(ns, fmt.Sprintf("task-%05d", i), nil)); err != nil {
			return err
		}
	}
	target := fmt.Sprintf("task-%05d", jobs/2)
	cs, err := kubernetes.NewForConfig(srv.Config())
	if err != nil {
		return err
	}
	// The server encodes each Job in protobuf (which typed clients ask
	// for) on first use; do that before measuring.
	if _, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{}); err != nil {
		return err
	}
	fmt.Fprintf(out, "DolphinScheduler: does %s exist, in a namespace of %d finished Jobs?\n", target, jobs)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tanswer\trequests\tbytes sent by the server\tbytes allocated*\ttime\t")

	measure := func(label string, check func() (bool, error)) error {
		srv.ResetCounts()
		a0 := allocated()
		start := time.Now()
		ok, err := check()
		elapsed := time.Since(start)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%v\t%d\t%s\t%s\t%v\t\n", label, ok, srv.Count("", "jobs"),
			humanize.IBytes(uint64(srv.BytesSent())), humanize.IBytes(allocated()-a0), elapsed.Round(time.Microsecond))
		return nil
	}

	// Before: jobExist listed every Job and filtered by name.
	if err := measure("List all + filter", func() (bool, error) {
		l, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, j := range l.Items {
			if j.Name == target {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}

	dyn, err := dynamic.NewForConfig(srv.Config())
	if err != nil {
		return err
	}
	c, err := k8sclient.New(dyn)
	if err != nil {
		return err
	}
	defer c.Close()
	// The first use of a resource type sets its cache up (ristretto's
	// counters, sized for the 64 MiB default bound): not part of a check.
	if _, err := c.JobExists(ctx, ns, "warm-up"); err != nil {
		return err
	}
	for _, m := range []struct {
		label string
		name  string
		times int
	}{
		{"JobExists", target, 1},
		{"JobExists x100 (hot loop)", target, 100},
		{"JobExists of a missing Job x100", "no-such-task", 100},
	} {
		if err := measure(m.label, func() (ok bool, err error) {
			for range m.times {
				if ok, err = c.JobExists(ctx, ns, m.name); err != nil {
					return false, err
				}
			}
			return ok, nil
		}); err != nil {
			return err
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "* by this process: the client and the in-process API-server double together")
	return nil
}

func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}
