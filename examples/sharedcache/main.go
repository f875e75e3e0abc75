// Command sharedcache shows two CI runners sharing one S3 bucket: each has
// its own local near tier (a localfs store) in front of the bucket. The
// first runner builds and uploads its layers; the second finds them in the
// bucket, fills its own disk from it, and on its next build hits locally.
// It prints hits, misses and bytes moved per tier.
//
// By default the bucket lives in an in-process S3 server on 127.0.0.1 (no
// network beyond loopback). Point it at a real one with -endpoint, -bucket
// and the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
//
//	go run ./examples/sharedcache [-layers 8] [-mib 4]
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/localfs"
	s3cache "github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

func main() {
	endpoint := flag.String("endpoint", "", "S3 endpoint (default: an in-process server on 127.0.0.1)")
	bucket := flag.String("bucket", "buildcache-shared", "bucket (created when the server is in-process)")
	layers := flag.Int("layers", 8, "layers per build")
	mib := flag.Int("mib", 4, "MiB per layer")
	flag.Parse()
	if err := run(context.Background(), *endpoint, *bucket, *layers, *mib); err != nil {
		fmt.Fprintln(os.Stderr, "sharedcache:", err)
		os.Exit(1)
	}
}

type blob struct {
	d    v1.Hash
	data []byte
}

func run(ctx context.Context, endpoint, bucket string, nLayers, mib int) error {
	var client *awss3.Client
	if endpoint == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: gofakes3.New(s3mem.New()).Server()}
		go srv.Serve(l)
		defer srv.Close()
		client = awss3.New(awss3.Options{
			Region: "us-east-1", BaseEndpoint: aws.String("http://" + l.Addr().String()), UsePathStyle: true,
			Credentials: credentials.NewStaticCredentialsProvider("example", "example", ""),
		})
		if _, err := client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			return err
		}
	} else {
		client = awss3.New(awss3.Options{
			Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
			Credentials: credentials.NewStaticCredentialsProvider(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
		})
	}

	// The build's layers: what a Dockerfile's steps would produce.
	var build []blob
	for range nLayers {
		b := make([]byte, mib<<20)
		rand.Read(b)
		d, _, _ := v1.SHA256(bytes.NewReader(b))
		build = append(build, blob{d, b})
	}

	runner := func(name string) (*tier.Cache, *s3cache.Cache, func(), error) {
		dir, err := os.MkdirTemp("", "sharedcache-"+name+"-")
		if err != nil {
			return nil, nil, nil, err
		}
		near, err := localfs.Open(dir)
		if err != nil {
			return nil, nil, nil, err
		}
		far, err := s3cache.New(client, bucket, "ci/")
		if err != nil {
			return nil, nil, nil, err
		}
		if err := far.Check(ctx); err != nil {
			return nil, nil, nil, err
		}
		t, err := tier.New(near, far)
		if err != nil {
			return nil, nil, nil, err
		}
		return t, far, func() { t.Close(); os.RemoveAll(dir) }, nil
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "runner\tbuild\tnear hits\tfar hits\tmisses (built)\tfilled near\tMiB from bucket\tMiB to bucket")
	buildOnce := func(name string, n int, c *tier.Cache, far *s3cache.Cache) (built int, err error) {
		before, farBefore := c.StatsByTier(), far.Stats()
		for _, b := range build {
			rc, err := c.Get(ctx, b.d)
			switch {
			case err == nil:
				_, err = io.Copy(io.Discard, rc) // verified as it streams
				rc.Close()
				if err != nil {
					return built, err
				}
			case errors.Is(err, cache.ErrNotFound):
				built++ // a real build would run the step here
				if err := c.Put(ctx, b.d, int64(len(b.data)), bytes.NewReader(b.data)); err != nil {
					return built, err
				}
			default:
				return built, err
			}
		}
		after, farAfter := c.StatsByTier(), far.Stats()
		fmt.Fprintf(tw, "%s\t#%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\n", name, n,
			after.NearHits-before.NearHits, after.FarHits-before.FarHits, built, after.Fills-before.Fills,
			float64(farAfter.BytesOut-farBefore.BytesOut)/(1<<20), float64(farAfter.BytesIn-farBefore.BytesIn)/(1<<20))
		return built, nil
	}

	a, farA, cleanA, err := runner("a")
	if err != nil {
		return err
	}
	defer cleanA()
	b, farB, cleanB, err := runner("b")
	if err != nil {
		return err
	}
	defer cleanB()
	if _, err := buildOnce("a", 1, a, farA); err != nil {
		return err
	}
	for n := 1; n <= 2; n++ {
		built, err := buildOnce("b", n, b, farB)
		if err != nil {
			return err
		}
		if built > 0 {
			tw.Flush()
			return fmt.Errorf("runner b had to build %d layers that runner a had shared", built)
		}
	}
	tw.Flush()
	fmt.Printf("\nrunner b built nothing: its first build came from the bucket runner a filled, its second from its own disk.\n")
	return nil
}
