package memory_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/memory"
)

// A read-through cache of image digests: the first Get resolves, the next
// ones within the TTL are answered from memory, and after the TTL the next
// Get resolves again.
func ExampleNew() {
	// A clock the example moves by hand, so that it needs no sleep.
	// Without WithClock the cache uses time.Now.
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	c, err := memory.New[string, string](
		memory.WithTTL(time.Minute),
		memory.WithClock(func() time.Time { return now }),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	resolve := func(ctx context.Context) (string, error) {
		fmt.Println("  resolving golang:1.22")
		return "sha256:4f9a…", nil
	}
	ctx := context.Background()
	for _, elapsed := range []time.Duration{0, 30 * time.Second, 30 * time.Second} {
		now = now.Add(elapsed)
		digest, err := c.Get(ctx, "golang:1.22", resolve)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(now.Format("15:04:05"), digest)
	}
	// Output:
	//   resolving golang:1.22
	// 12:00:00 sha256:4f9a…
	// 12:00:30 sha256:4f9a…
	//   resolving golang:1.22
	// 12:01:00 sha256:4f9a…
}

// "Not found" is an answer worth remembering for a short while, so that a
// caller polling for an object that does not exist yet does not hit the
// API server on every call. Other errors are never cached.
func ExampleWithNegativeTTL() {
	c, err := memory.New[string, string](
		memory.WithTTL(time.Minute),
		memory.WithNegativeTTL(5*time.Second, func(err error) bool { return errors.Is(err, cache.ErrNotFound) }),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	get := func(ctx context.Context) (string, error) {
		fmt.Println("  asking the API server")
		return "", fmt.Errorf("jobs/release-42: %w", cache.ErrNotFound)
	}
	ctx := context.Background()
	for range 2 {
		_, err := c.Get(ctx, "jobs/release-42", get)
		fmt.Println(err, errors.Is(err, cache.ErrNotFound))
	}
	fmt.Println(c.Stats().NegativeHits, "negative hit")
	// Output:
	//   asking the API server
	// jobs/release-42: not found in cache true
	// jobs/release-42: not found in cache true
	// 1 negative hit
}
