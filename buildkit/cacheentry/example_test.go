package cacheentry_test

import (
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/buildcache/buildcache/buildkit/cacheentry"
	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/s3"
	"github.com/buildcache/buildcache/tier"
)

func ExampleFor() {
	// A bucket on MinIO, shared by every CI runner.
	client := awss3.New(awss3.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://minio:9000"), UsePathStyle: true})
	bucket, _ := s3.New(client, "ci-cache", "myapp/")

	entries, err := cacheentry.For(bucket, cacheentry.WithName("main"))
	if err != nil {
		panic(err)
	}
	// opt.CacheImports, opt.CacheExports = entries.Imports, entries.Exports
	for _, e := range entries.Exports {
		fmt.Println(e.Type)
		for _, k := range slices.Sorted(maps.Keys(e.Attrs)) {
			fmt.Printf("  %s=%s\n", k, e.Attrs[k])
		}
	}
	// Output:
	// s3
	//   blobs_prefix=blobs/
	//   bucket=ci-cache
	//   endpoint_url=http://minio:9000
	//   manifests_prefix=manifests/
	//   mode=max
	//   name=main
	//   prefix=myapp/
	//   region=us-east-1
	//   use_path_style=true
}

func ExampleFor_tier() {
	dir, _ := os.MkdirTemp("", "buildcache")
	defer os.RemoveAll(dir)
	near, _ := localfs.Open(dir)
	far, _ := s3.New(awss3.New(awss3.Options{Region: "eu-west-1"}), "ci-cache", "")
	store, _ := tier.New(near, far)
	defer store.Close() // closes both tiers

	// A build reads the runner's directory first, then the bucket, and
	// writes both, as the tier does.
	entries, err := cacheentry.For(store)
	if err != nil {
		panic(err)
	}
	for _, e := range entries.Imports {
		fmt.Println("import", e.Type)
	}
	for _, e := range entries.Exports {
		fmt.Println("export", e.Type, e.Attrs["mode"])
	}
	// Output:
	// import local
	// import s3
	// export local max
	// export s3 max
}

func ExampleEntries_Append() {
	dir, _ := os.MkdirTemp("", "buildcache")
	defer os.RemoveAll(dir)
	store, _ := localfs.Open(dir)
	defer store.Close()

	// Import from the local store and the shared registry cache; export to
	// the local store only, everything (mode=max).
	local, _ := cacheentry.For(store)
	shared, _ := cacheentry.Registry("registry.example.com/ci/cache:main", cacheentry.WithImportOnly())
	entries := local.Append(shared)
	for _, e := range entries.Imports {
		fmt.Println("import", e.Type)
	}
	for _, e := range entries.Exports {
		fmt.Println("export", e.Type, e.Attrs["mode"])
	}
	// Output:
	// import local
	// import registry
	// export local max
}
