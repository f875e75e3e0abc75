package trust_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/buildcache/buildcache/localfs"
	"github.com/buildcache/buildcache/registry"
	"github.com/buildcache/buildcache/trust"
)

// A cosign public key, as cosign generate-key-pair writes cosign.pub.
const examplePub = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEbkzjjPsnOylXgi6rmCsX/SpdsTkx
Rpf5c2YewtOT4u1/ADpBq0D2a2UHzNaTycupGmjewDktOhN9KNCgZNC+Qg==
-----END PUBLIC KEY-----
`

// ExampleLoad loads a policy and gives it to a resolver: images of
// registry.internal:5000/team must be signed by cosign.pub, Docker Hub's
// official images are only warned about (here with the same key), the
// rest is not checked.
func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "policy")
	defer os.RemoveAll(dir)
	_ = os.WriteFile(filepath.Join(dir, "cosign.pub"), []byte(examplePub), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(`
default: skip
rules:
  - repositories: ["registry.internal:5000/team/**"]
    mode: require
    keys: [cosign.pub]
  - repositories: ["docker.io/library/*"]
    mode: warn
    keys: [cosign.pub]
`), 0o644)
	policy, err := trust.Load(filepath.Join(dir, "policy.yaml"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, repo := range []string{"registry.internal:5000/team/app", "index.docker.io/library/golang", "ghcr.io/other/tool"} {
		r := policy.Rule(repo)
		fmt.Printf("%s: %s (rule %s)\n", repo, r.Mode, r.Name)
	}

	store, _ := localfs.Open(filepath.Join(dir, "cache"))
	defer store.Close()
	resolver, err := registry.NewResolver(store, registry.WithVerifier(policy))
	fmt.Println(resolver != nil, err)
	// resolver.Resolve(ctx, "registry.internal:5000/team/app:v1") now fails
	// with a *registry.UntrustedError unless cosign.pub signed the image.

	// Output:
	// registry.internal:5000/team/app: require (rule registry.internal:5000/team/**)
	// index.docker.io/library/golang: warn (rule docker.io/library/*)
	// ghcr.io/other/tool: skip (rule default)
	// true <nil>
}
